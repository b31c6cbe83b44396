"""The sandbox's OAuth provider, without HTTP: authorizations, codes, grants and tokens.

Why apart from the routes: every refusal a strict authorization server makes (exact redirect
URIs, PKCE S256 only, single-use codes that revoke on replay, refresh-token rotation with reuse
detection, scope narrowing only) is a pure decision on this state, testable without a socket.
All state sits behind one lock, since the HTTP server runs requests in many threads.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from qonic_proxy.oauth.pkce import MAX_VERIFIER_LENGTH, MIN_VERIFIER_LENGTH, code_challenge_s256
from qonic_proxy.qonic import KNOWN_SCOPES
from qonic_proxy.sandbox.settings import SandboxSettings, new_stats
from qonic_proxy.sandbox.token_format import new_access_token, token_body

CONSENT_LIFETIME = 600.0  # seconds a consent page stays answerable
GRANT_TYPES = ("authorization_code", "refresh_token")
_PKCE_RE = re.compile(rf"^[A-Za-z0-9\-._~]{{{MIN_VERIFIER_LENGTH},{MAX_VERIFIER_LENGTH}}}$")


class OAuthError(Exception):
    """A token-endpoint or authorize error with its RFC 6749 code (never carries secrets)."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status


class RedirectError(OAuthError):
    """An authorize or consent refusal that goes back to the (trusted) redirect URI."""

    def __init__(self, code: str, description: str, redirect_uri: str, state: str | None):
        super().__init__(code, description)
        self.location = add_query(
            redirect_uri, _with_state({"error": code, "error_description": description}, state)
        )


class UntrustedRequest(Exception):
    """The client_id or redirect_uri is not registered: answer with a page, never a redirect."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"{field} is not registered")
        self.field = field  # "client_id" or "redirect_uri"
        self.value = value


class ConsentExpired(Exception):
    """The consent id is unknown, already answered or too old."""


@dataclass
class Pending:
    """An authorize request waiting for (or having passed) the user's consent."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    challenge: str
    created: float


@dataclass
class Code:
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str
    issued: float
    used: bool = False
    grant_id: str | None = None


@dataclass
class Grant:
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class Access:
    grant_id: str
    scope: str
    expires: float  # on the grants' clock
    revoked: bool = False


@dataclass
class Refresh:
    grant_id: str
    used: bool = False


def add_query(uri: str, params: Mapping[str, str]) -> str:
    """Append parameters to a registered redirect URI, keeping any query it already has."""
    sep = "&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")
    return uri + sep + urlencode(params)


def _with_state(params: dict[str, str], state: str | None) -> dict[str, str]:
    if state is not None:
        params["state"] = state
    return params


class Grants:
    """All OAuth state and counters of one sandbox, behind one lock."""

    def __init__(
        self, settings: SandboxSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.lock = threading.Lock()
        self.pending: dict[str, Pending] = {}
        self.codes: dict[str, Code] = {}
        self.grants: dict[str, Grant] = {}
        self.access: dict[str, Access] = {}
        self.refresh: dict[str, Refresh] = {}
        self.stats = new_stats()
        self.jwt_key = secrets.token_bytes(32)
        self.issuer = ""

    # -- counters and switches -----------------------------------------------------------
    def count(self, *path: str) -> None:
        with self.lock:
            node: Any = self.stats
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] += 1

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the counters: safe to keep and compare."""
        with self.lock:
            copy: dict[str, Any] = json.loads(json.dumps(self.stats))
            return copy

    def set_access_token_lifetime(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("The access token lifetime must be positive.")
        with self.lock:
            self.settings.access_token_lifetime = seconds

    def revoke_access(self) -> None:
        with self.lock:
            for rec in self.access.values():
                rec.revoked = True

    def revoke_grants(self) -> None:
        with self.lock:
            for grant in self.grants.values():
                grant.revoked = True
            for rec in self.access.values():
                rec.revoked = True

    # -- authorize and consent -----------------------------------------------------------
    def start_authorization(self, params: Mapping[str, list[str]]) -> Pending:
        """Check an authorize request; UntrustedRequest before the redirect URI is trusted."""
        s = self.settings

        def one(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        client_id = one("client_id")
        if not client_id or len(params.get("client_id", [])) != 1 or client_id != s.client_id:
            raise UntrustedRequest("client_id", client_id or "")
        redirect_uri = one("redirect_uri")
        if (
            not redirect_uri
            or len(params.get("redirect_uri", [])) != 1
            or redirect_uri not in s.redirect_uris
        ):
            raise UntrustedRequest("redirect_uri", redirect_uri or "")
        state = one("state")

        def fail(code: str, description: str) -> RedirectError:
            return RedirectError(code, description, redirect_uri, state)

        duplicated = sorted(k for k, v in params.items() if len(v) > 1)
        if duplicated:
            raise fail("invalid_request", f"Parameter {duplicated[0]} is repeated.")
        response_type = one("response_type")
        if not response_type:
            raise fail("invalid_request", "response_type is missing.")
        if response_type != "code":
            raise fail("unsupported_response_type", "Only response_type=code is supported.")
        challenge = one("code_challenge")
        if one("code_challenge_method") != "S256":
            raise fail("invalid_request", "PKCE with code_challenge_method=S256 is required.")
        if not challenge or not _PKCE_RE.match(challenge):
            raise fail("invalid_request", "code_challenge is missing or malformed.")
        scope = one("scope")
        if not scope or any(w not in KNOWN_SCOPES for w in scope.split(" ")):
            raise fail("invalid_scope", "scope must be a space-separated list of known scopes.")
        return Pending(client_id, redirect_uri, scope, state, challenge, self.clock())

    def approve(self, pending: Pending) -> str:
        """Issue a single-use code; returns the redirect location that carries it."""
        code = secrets.token_urlsafe(32)
        with self.lock:
            self.codes[code] = Code(
                pending.client_id, pending.redirect_uri, pending.scope, pending.challenge,
                self.clock(),
            )
        return add_query(pending.redirect_uri, _with_state({"code": code}, pending.state))

    def new_consent(self, pending: Pending) -> str:
        """Park the request until the user answers; returns the consent id for the form."""
        consent_id = secrets.token_urlsafe(24)
        with self.lock:
            now = self.clock()
            for key in [k for k, p in self.pending.items() if now - p.created > CONSENT_LIFETIME]:
                del self.pending[key]
            self.pending[consent_id] = pending
        return consent_id

    def answer_consent(self, consent_id: str, approve: bool) -> str:
        """The user's answer (each consent id once): the location of the code, or RedirectError."""
        with self.lock:
            pending = self.pending.pop(consent_id, None) if consent_id else None
        if pending is None or self.clock() - pending.created > CONSENT_LIFETIME:
            raise ConsentExpired("This consent request is no longer valid.")
        if not approve:
            raise RedirectError(
                "access_denied", "The user denied access.", pending.redirect_uri, pending.state
            )
        return self.approve(pending)

    # -- token endpoint ------------------------------------------------------------------
    def token(self, parsed: Mapping[str, list[str]], *, header_auth: bool) -> dict[str, Any]:
        """One token request (the form as parsed, repeats kept); counts its outcome."""
        form = {k: v[0] for k, v in parsed.items()}
        grant_type = form.get("grant_type", "")
        counted = grant_type if grant_type in GRANT_TYPES else ""
        try:
            repeated = sorted(k for k, v in parsed.items() if len(v) > 1)
            if repeated:
                raise OAuthError("invalid_request", f"Parameter {repeated[0]} is repeated.")
            if not counted:
                raise OAuthError(
                    "unsupported_grant_type",
                    "grant_type must be authorization_code or refresh_token.",
                )
            self.authenticate_client(form, header_auth=header_auth)
            if grant_type == "authorization_code":
                body = self.exchange_code(form)
            else:
                if not self.settings.issue_refresh_tokens:
                    raise OAuthError("unsupported_grant_type", "Refresh tokens are not issued.")
                if self.settings.refresh_delay:
                    time.sleep(self.settings.refresh_delay)
                body = self.use_refresh(form)
        except OAuthError:
            if counted:
                self.count("token", counted, "error")
            raise
        self.count("token", counted, "ok")
        return body

    def authenticate_client(self, form: Mapping[str, str], *, header_auth: bool) -> None:
        s = self.settings
        if header_auth:
            raise OAuthError(
                "invalid_client",
                "Client authentication in the Authorization header is not accepted; "
                "send client_id and client_secret in the form body.",
                401,
            )
        client_id = form.get("client_id")
        if not client_id:
            raise OAuthError("invalid_client", "client_id is missing.", 401)
        if not hmac.compare_digest(client_id.encode(), s.client_id.encode()):
            raise OAuthError("invalid_client", "Unknown client_id.", 401)
        if s.client_secret is not None:
            given = form.get("client_secret")
            if not given:
                raise OAuthError("invalid_client", "client_secret is missing.", 401)
            if not hmac.compare_digest(given.encode(), s.client_secret.encode()):
                raise OAuthError("invalid_client", "client_secret is wrong.", 401)

    def exchange_code(self, form: Mapping[str, str]) -> dict[str, Any]:
        code = form.get("code")
        if not code:
            raise OAuthError("invalid_request", "code is missing.")
        with self.lock:
            rec = self.codes.get(code)
            if rec is None:
                raise OAuthError("invalid_grant", "The authorization code is not known.")
            if rec.used:
                # RFC 6749 4.1.2: a replayed code revokes everything issued from it.
                if rec.grant_id is not None and rec.grant_id in self.grants:
                    self.grants[rec.grant_id].revoked = True
                raise OAuthError(
                    "invalid_grant",
                    "The authorization code was already used; tokens issued from it are revoked.",
                )
            if self.clock() - rec.issued > self.settings.code_lifetime:
                raise OAuthError("invalid_grant", "The authorization code has expired.")
            if form.get("client_id") != rec.client_id:
                raise OAuthError("invalid_grant", "The code was issued to another client.")
            if form.get("redirect_uri") != rec.redirect_uri:
                raise OAuthError(
                    "invalid_grant",
                    "redirect_uri differs from the one used in the authorization request.",
                )
            verifier = form.get("code_verifier")
            if not verifier:
                raise OAuthError("invalid_request", "code_verifier is missing (PKCE is required).")
            if not _PKCE_RE.match(verifier) or not hmac.compare_digest(
                code_challenge_s256(verifier), rec.challenge
            ):
                raise OAuthError("invalid_grant", "code_verifier does not match code_challenge.")
            rec.used = True
            grant_id = secrets.token_hex(8)
            rec.grant_id = grant_id
            self.grants[grant_id] = Grant(rec.client_id, rec.scope)
            return self._issue(grant_id, rec.scope, with_refresh=self.settings.issue_refresh_tokens)

    def use_refresh(self, form: Mapping[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is missing.")
        with self.lock:
            rec = self.refresh.get(token)
            grant = self.grants.get(rec.grant_id) if rec is not None else None
            if rec is None or grant is None:
                raise OAuthError("invalid_grant", "The refresh token is not known.")
            if grant.revoked:
                raise OAuthError("invalid_grant", "The refresh token has been revoked.")
            if rec.used:
                # Reuse of a rotated token means it leaked: kill the whole grant (RFC 9700 4.14).
                grant.revoked = True
                self.stats["refresh_token_reused"] += 1
                raise OAuthError(
                    "invalid_grant",
                    "The refresh token was already used; the grant is revoked, log in again.",
                )
            if form.get("client_id") != grant.client_id:
                raise OAuthError("invalid_grant", "The refresh token belongs to another client.")
            scope = grant.scope
            requested = form.get("scope")
            if requested is not None:
                wanted = requested.split()
                if not wanted or not set(wanted) <= set(grant.scope.split()):
                    raise OAuthError("invalid_scope", "The requested scope exceeds the grant.")
                scope = " ".join(wanted)
            rotate = self.settings.rotate_refresh_tokens
            if rotate:
                rec.used = True
            return self._issue(rec.grant_id, scope, with_refresh=rotate)

    # -- tokens --------------------------------------------------------------------------
    def check_access(self, token: str) -> Access | None:
        """The live record of an access token, or None (unknown, expired or revoked)."""
        with self.lock:
            rec = self.access.get(token)
            if rec is None or rec.revoked or self.clock() >= rec.expires:
                return None
            grant = self.grants.get(rec.grant_id)
            if grant is None or grant.revoked:
                return None
            return rec

    def _issue(self, grant_id: str, scope: str, *, with_refresh: bool) -> dict[str, Any]:
        """Mint tokens for a grant (caller holds the lock) and shape the response body."""
        lifetime = self.settings.access_token_lifetime
        access = new_access_token(
            self.settings, issuer=self.issuer, key=self.jwt_key, scope=scope, lifetime=lifetime
        )
        self.access[access] = Access(grant_id, scope, self.clock() + lifetime)
        refresh = None
        if with_refresh:
            refresh = secrets.token_urlsafe(32)
            self.refresh[refresh] = Refresh(grant_id)
        return token_body(
            self.settings, access=access, refresh=refresh, scope=scope, lifetime=lifetime
        )
