"""The OAuth client: authorize URL, token requests and the loopback callback of one browser login.

This module never imports mitmproxy: the daemon, the `login` verb and the tests all drive it the
same way. Token requests are blocking (urllib) so they stay simple and auditable; async callers
run them with `asyncio.to_thread`. Nothing secret (code, verifier, client secret, tokens) is ever
put into a log record, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hmac
import html
import http.client
import json
import logging
import math
import socket
import ssl
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from qonic_proxy.config.model import Config
from qonic_proxy.errors import ConfigError, LoginError, TokenEndpointError
from qonic_proxy.oauth import pkce

log = logging.getLogger(__name__)

MAX_TOKEN_RESPONSE = 1024 * 1024  # a token response is a few KiB; anything huge is not one
_USER_AGENT = "qonic-proxy"
BEARER = "Bearer"  # the only token type we can use


# --------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class TokenSet:
    """What one token response gave us. The tokens are kept out of repr so they never hit a log."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None  # epoch seconds; None = unknown (use until the API says 401)
    scopes: tuple[str, ...]
    token_type: str  # always "Bearer"
    obtained_at: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the cache file (it holds the tokens: the file must be 0600)."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "scopes": list(self.scopes),
            "token_type": self.token_type,
            "obtained_at": self.obtained_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenSet:
        """Rebuild from `to_json` output; ValueError (naming the field, not its value) otherwise."""
        if not isinstance(data, dict):
            raise ValueError("token data is not a JSON object")
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("access_token is missing or not a non-empty string")
        refresh = data.get("refresh_token")
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            raise ValueError("refresh_token is not a non-empty string or null")
        expires_at = data.get("expires_at")
        if expires_at is not None and not _is_finite_number(expires_at):
            raise ValueError("expires_at is not a number or null")
        scopes = data.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("scopes is not a list of strings")
        token_type = data.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise ValueError("token_type is not 'Bearer'")
        obtained_at = data.get("obtained_at")
        if not _is_finite_number(obtained_at):
            raise ValueError("obtained_at is not a number")
        return cls(
            access_token=access,
            refresh_token=refresh,
            expires_at=None if expires_at is None else float(expires_at),
            scopes=tuple(scopes),
            token_type=BEARER,
            obtained_at=float(obtained_at),
        )


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------
# Authorize URL


def build_authorize_url(cfg: Config, *, code_challenge: str, state: str) -> str:
    """The URL the browser is sent to. It carries only public values: never the client secret."""
    params = [
        ("response_type", "code"),
        ("client_id", cfg.oauth.client_id),
        ("redirect_uri", cfg.oauth.redirect_uri),
    ]
    if cfg.oauth.scopes:
        params.append(("scope", " ".join(cfg.oauth.scopes)))
    params += [
        ("state", state),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ]
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    parts = urllib.parse.urlsplit(cfg.qonic.authorize_url)
    if parts.query:  # keep whatever the configured URL already carries
        query = f"{parts.query}&{query}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


# --------------------------------------------------------------------------------------------
# Token responses


def _clean(text: str, limit: int = 200) -> str:
    """Server text made safe for one log line/terminal: no control or format chars, bounded."""
    kept = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    kept = " ".join(kept.split())
    if len(kept) > limit:
        kept = kept[: limit - 1].rstrip() + "…"
    return kept


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    """Belt and braces: a server may echo what we sent; never let that reach a message."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, "[redacted]")
    return text


def _advice(error_code: str | None, status: int) -> str:
    if error_code == "invalid_client" or (error_code is None and status == 401):
        return "check [oauth] client_id and the client secret"
    if error_code == "invalid_grant":
        return "log in again with `qonic-proxy login`"
    if error_code == "invalid_scope":
        return "check [oauth] scopes (Qonic lists the valid ones at /v1/auth/scopes)"
    if error_code in ("unauthorized_client", "unsupported_grant_type"):
        return "check that the application registered with Qonic may use this grant type"
    if error_code == "invalid_request":
        return (
            "check that [oauth] redirect_uri matches the one registered with Qonic, "
            "then log in again with `qonic-proxy login`"
        )
    if error_code in ("temporarily_unavailable", "server_error") or status >= 500:
        return "try again later"
    return "check the [oauth] settings and log in again with `qonic-proxy login`"


def _describe_details(details: object) -> str:
    """Qonic's `errorDetails` has no documented shape: render str, dict or list readably."""
    if isinstance(details, str):
        return details
    if isinstance(details, dict):
        for key in ("message", "description", "detail", "title", "error"):
            value = details.get(key)
            if isinstance(value, str) and value:
                return value
        return json.dumps(details, ensure_ascii=False, separators=(",", ":"))[:400]
    if isinstance(details, list):
        return "; ".join(_describe_details(item) for item in details[:10])
    return json.dumps(details)[:400] if details is not None else ""


def _server_error(data: object) -> tuple[str | None, str]:
    """(error code, description) from an RFC 6749 or Qonic error body; (None, "") when absent."""
    if not isinstance(data, dict):
        return None, ""
    code = data.get("error")
    description = data.get("error_description")
    if description is None:
        description = data.get("errorDescription")
    parts: list[str] = []
    if isinstance(description, str) and description:
        parts.append(description)
    if "errorDetails" in data:
        parts.append(_describe_details(data["errorDetails"]))
    if not isinstance(code, str) or not code:
        code = None
        # Some servers put a problem-details title/detail instead of an OAuth error code.
        for key in ("title", "detail", "message"):
            value = data.get(key)
            if isinstance(value, str) and value and not parts:
                parts.append(value)
    return (_clean(code, 60) if code else None), _clean(" ".join(parts))


def _first(data: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in data and data[name] is not None:
            return data[name]
    return None


def _jwt_exp(token: str) -> float | None:
    """The `exp` claim when the access token is a JWT. Unverified: only a hint for refreshing."""
    pieces = token.split(".")
    if len(pieces) != 3:
        return None
    payload = pieces[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if _is_finite_number(exp) and exp > 0 else None


def _expires_in(value: object, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    if not _is_finite_number(value) or value < 0:  # type: ignore[operator]
        raise TokenEndpointError(
            f"the token endpoint{where} answered with an expires_in that is not a number of "
            "seconds; check [qonic] token_url points at Qonic's token endpoint",
            error_code="invalid_response",
        )
    return float(value)  # type: ignore[arg-type]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_token_response(
    status: int,
    content_type: str | None,
    body: bytes,
    *,
    requested_scopes: Iterable[str],
    now: float,
    endpoint: str | None = None,
    redact: Iterable[str | None] = (),
) -> TokenSet:
    """Turn a token endpoint answer into a TokenSet or one clear TokenEndpointError.

    Tolerant of Qonic's camelCase variants; strict about everything that would make the token
    unusable. `redact` lists values we sent (code, verifier, secret, refresh token) that must not
    reach the message even if the server echoes them.
    """
    where = f" at {endpoint}" if endpoint else ""
    secrets = tuple(redact)

    def fail(message: str, code: str | None) -> TokenEndpointError:
        return TokenEndpointError(_redact(message, secrets), error_code=code, status=status)

    if len(body) > MAX_TOKEN_RESPONSE:
        raise fail(
            f"the token endpoint{where} answered with more than {MAX_TOKEN_RESPONSE} bytes, "
            "which is not a token response; check [qonic] token_url",
            "too_large",
        )
    data: object
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = _NOT_JSON

    if status >= 300 or (isinstance(data, dict) and isinstance(data.get("error"), str)):
        if data is _NOT_JSON:
            kind = _clean(content_type or "no content type", 60)
            raise fail(
                f"the token endpoint{where} answered HTTP {status} with a body that is not JSON "
                f"({kind}); {_advice(None, status)}",
                "http_error",
            )
        code, description = _server_error(data)
        said = ": ".join(part for part in (code, description) if part) or "no error description"
        raise fail(
            f"the token endpoint{where} refused the request (HTTP {status}, {said}); "
            f"{_advice(code, status)}",
            code or "http_error",
        )
    if data is _NOT_JSON or not isinstance(data, dict):
        kind = _clean(content_type or "no content type", 60)
        raise fail(
            f"the token endpoint{where} answered HTTP {status} with something other than a JSON "
            f"object ({kind}); check [qonic] token_url points at Qonic's token endpoint",
            "invalid_response",
        )

    access = _first(data, "access_token", "accessToken")
    if not isinstance(access, str) or not access:
        raise fail(
            f"the token endpoint{where} answered without an access token; check [qonic] "
            "token_url points at Qonic's token endpoint",
            "missing_access_token",
        )
    token_type = _first(data, "token_type", "tokenType")
    if token_type is None:
        token_type = BEARER  # RFC 6749 requires it, but the value is all we can use anyway
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = _clean(token_type, 40) if isinstance(token_type, str) else "not a string"
        raise fail(
            f"the token endpoint{where} issued a token of type '{shown}', but only Bearer tokens "
            "can be used; check [qonic] token_url",
            "unsupported_token_type",
        )
    refresh = _first(data, "refresh_token", "refreshToken")
    if refresh is not None and not isinstance(refresh, str):
        raise fail(
            f"the token endpoint{where} answered with a refresh token that is not a string; "
            "check [qonic] token_url points at Qonic's token endpoint",
            "invalid_response",
        )
    expires_in = _first(data, "expires_in", "expiresIn")
    if expires_in is not None:
        expires_at: float | None = now + _expires_in(expires_in, where)
    else:
        expires_at = _jwt_exp(access)
    scope = data.get("scope")
    if isinstance(scope, str) and scope.strip():
        scopes = tuple(scope.split())
    elif isinstance(scope, list) and scope and all(isinstance(s, str) for s in scope):
        scopes = tuple(scope)
    else:
        scopes = tuple(requested_scopes)
    return TokenSet(
        access_token=access,
        refresh_token=refresh or None,
        expires_at=expires_at,
        scopes=scopes,
        token_type=BEARER,
        obtained_at=now,
    )


_NOT_JSON = object()


# --------------------------------------------------------------------------------------------
# Token requests


def make_ssl_context(cfg: Config) -> ssl.SSLContext:
    """System trust plus `[qonic] ca_file` when set. Verification is never switched off."""
    ctx = ssl.create_default_context()
    if cfg.qonic.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(cfg.qonic.ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise ConfigError(
                f"cannot load [qonic] ca_file {cfg.qonic.ca_file} ({reason}); point it at a "
                "readable PEM file with the CA certificate(s)"
            ) from None
    return ctx


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A token endpoint that redirects is misconfigured or hostile: never re-post the form."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _display_url(url: str) -> str:
    """The endpoint as shown in messages: no userinfo, query or fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _read_capped(stream: Any) -> bytes:
    data = stream.read(MAX_TOKEN_RESPONSE + 1)
    return data if isinstance(data, bytes) else b""


def _network_error(exc: BaseException, url: str, timeout: float) -> TokenEndpointError:
    """One sentence per way a connection can fail, each with where to look."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return TokenEndpointError(
            f"the token endpoint at {url} did not answer within {timeout:g} s; check [qonic] "
            "token_url and your network",
            error_code="timeout",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = _clean(exc.verify_message or str(exc), 120)
        return TokenEndpointError(
            f"the TLS certificate of the token endpoint at {url} could not be verified ({why}); "
            "if it is signed by a private or corporate CA, set [qonic] ca_file to that CA's PEM "
            "file",
            error_code="tls_verify",
        )
    if isinstance(exc, ssl.SSLError):
        why = _clean(exc.reason or str(exc), 120)
        return TokenEndpointError(
            f"the TLS handshake with the token endpoint at {url} failed ({why}); check [qonic] "
            "token_url (https on a TLS port) and [qonic] ca_file",
            error_code="tls",
        )
    if isinstance(exc, ConnectionRefusedError):
        return TokenEndpointError(
            f"the token endpoint at {url} refused the connection (nothing listening); check "
            "[qonic] token_url and that the service is up",
            error_code="connection_refused",
        )
    if isinstance(exc, socket.gaierror):
        host = urllib.parse.urlsplit(url).hostname
        return TokenEndpointError(
            f"the host name {host} of the token endpoint could not be resolved; check [qonic] "
            "token_url and your DNS or network",
            error_code="dns",
        )
    if isinstance(exc, ConnectionError | http.client.HTTPException):
        return TokenEndpointError(
            f"the token endpoint at {url} closed the connection or sent an invalid HTTP "
            "response; check [qonic] token_url and try again",
            error_code="network",
        )
    why = _clean(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__, 120)
    return TokenEndpointError(
        f"the token endpoint at {url} could not be reached ({why}); check [qonic] token_url "
        "and your network",
        error_code="network",
    )


def _token_request(
    cfg: Config, fields: dict[str, str], *, timeout: float, redact: tuple[str | None, ...]
) -> TokenSet:
    """POST the form to the token endpoint and parse the answer (blocking)."""
    url = cfg.qonic.token_url
    shown = _display_url(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise TokenEndpointError(
            f"[qonic] token_url {shown} is not an http(s) URL; set it to Qonic's token endpoint",
            error_code="config",
        )
    body = urllib.parse.urlencode(fields).encode("ascii")
    request = urllib.request.Request(  # scheme checked above
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        },
    )
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=make_ssl_context(cfg)), _NoRedirect()
    )
    log.debug("token request: POST %s (grant_type=%s)", shown, fields.get("grant_type"))
    try:
        try:
            with opener.open(request, timeout=timeout) as response:
                status = response.status
                content_type = response.headers.get("Content-Type")
                data = _read_capped(response)
        except urllib.error.HTTPError as exc:
            status = exc.code
            content_type = exc.headers.get("Content-Type") if exc.headers else None
            if 300 <= status < 400:
                exc.close()
                raise TokenEndpointError(
                    f"the token endpoint at {shown} answered with a redirect (HTTP {status}), "
                    "which token endpoints must not do; set [qonic] token_url to the final URL",
                    error_code="redirect",
                    status=status,
                ) from None
            try:
                data = _read_capped(exc)
            except (OSError, http.client.HTTPException):
                data = b""
            finally:
                exc.close()
    except TokenEndpointError:
        raise
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        error = _network_error(exc, shown, timeout)
        log.debug("token request to %s failed: %s", shown, error)
        raise error from None
    log.debug("token endpoint answered HTTP %d (%d bytes)", status, len(data))
    return parse_token_response(
        status,
        content_type,
        data,
        requested_scopes=cfg.oauth.scopes,
        now=time.time(),
        endpoint=shown,
        redact=redact,
    )


def _client_fields(cfg: Config) -> dict[str, str]:
    fields = {"client_id": cfg.oauth.client_id}
    if cfg.oauth.client_secret is not None:
        fields["client_secret"] = cfg.oauth.client_secret
    return fields


def exchange_code(cfg: Config, *, code: str, code_verifier: str, timeout: float = 30) -> TokenSet:
    """Trade an authorization code for tokens (blocking; async callers use asyncio.to_thread)."""
    fields = _client_fields(cfg)
    fields.update(
        code=code,
        redirect_uri=cfg.oauth.redirect_uri,  # byte-identical to the authorize step
        code_verifier=code_verifier,
        grant_type="authorization_code",
    )
    redact = (code, code_verifier, cfg.oauth.client_secret)
    return _token_request(cfg, fields, timeout=timeout, redact=redact)


def refresh_tokens(cfg: Config, refresh_token: str, *, timeout: float = 30) -> TokenSet:
    """Use the refresh token; servers that do not rotate it leave us the old one."""
    fields = _client_fields(cfg)
    fields.update(grant_type="refresh_token", refresh_token=refresh_token)
    redact = (refresh_token, cfg.oauth.client_secret)
    tokens = _token_request(cfg, fields, timeout=timeout, redact=redact)
    if tokens.refresh_token is None:
        tokens = replace(tokens, refresh_token=refresh_token)
    return tokens


# --------------------------------------------------------------------------------------------
# Loopback callback server

MAX_HEAD = 16 * 1024  # request line + headers
READ_TIMEOUT = 10.0  # per connection: a silent socket (browser preconnect) must not pin us
MAX_CONNECTIONS = 32
_PAGE_HEADERS = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Connection", "close"),
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_STRICT_PARAMS = ("state", "code", "error", "error_description", "error_uri")


def _page(title: str, *paragraphs: str) -> bytes:
    """A self-contained page (no external resources, no scripts, no styles); all text escaped."""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>qonic-proxy: {html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    ).encode()


@dataclass(frozen=True)
class _Callback:
    """What a valid redirect carried: a code, or an error with its description."""

    code: str | None = field(default=None, repr=False)
    error: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class _Bind:
    hosts: tuple[str, ...]  # addresses to listen on; the first one is required
    optional_hosts: tuple[str, ...]
    port: int
    path: str


def _parse_redirect_uri(uri: str) -> _Bind:
    """Where to listen: exactly the redirect_uri's loopback host and port (RFC 8252 section 7.3)."""
    parts = urllib.parse.urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host not in ("localhost", "127.0.0.1", "::1") or not port:
        raise LoginError(
            f"[oauth] redirect_uri {uri} cannot be received here; use an http://localhost:PORT/"
            "path (or 127.0.0.1 / [::1]) URI that is also registered with Qonic"
        )
    path = parts.path or "/"
    if host == "localhost":
        return _Bind(("127.0.0.1",), ("::1",), port, path)
    return _Bind((host,), (), port, path)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoginAttempt:
    """One browser login: PKCE pair, state, callback listener.

    Used by the `login` verb, the daemon at start, and the daemon's /-/login endpoint. The
    listener accepts exactly one valid redirect; anything else (wrong path, wrong state, malformed
    query) gets an error page and the attempt keeps waiting, so a stray or hostile request cannot
    end the real login.
    """

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._bind = _parse_redirect_uri(cfg.oauth.redirect_uri)
        self._verifier = pkce.new_code_verifier()
        self._state = pkce.new_state()
        self.authorize_url = build_authorize_url(
            cfg, code_challenge=pkce.code_challenge_s256(self._verifier), state=self._state
        )
        self._servers: list[asyncio.AbstractServer] = []
        self._result: asyncio.Future[_Callback] | None = None
        self._outcome: asyncio.Future[bytes] | None = None  # the page the winning tab gets
        self._winner: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"LoginAttempt(redirect_uri={self._cfg.oauth.redirect_uri!r})"

    @property
    def redirect_uri(self) -> str:
        return self._cfg.oauth.redirect_uri

    async def start(self) -> None:
        """Listen on exactly the redirect_uri's address and port."""
        if self._servers:
            raise RuntimeError("LoginAttempt.start() called twice")
        if self._closed:
            raise RuntimeError("LoginAttempt was closed")
        loop = asyncio.get_running_loop()
        self._result = loop.create_future()
        self._outcome = loop.create_future()
        bind = self._bind
        try:
            for host in bind.hosts + bind.optional_hosts:
                try:
                    server = await asyncio.start_server(
                        self._handle, host=host, port=bind.port, limit=MAX_HEAD
                    )
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise LoginError(
                            f"port {bind.port} for the login callback (redirect_uri "
                            f"{self.redirect_uri}) is in use; stop the program using it or change "
                            "[oauth] redirect_uri (it must match the one registered with Qonic)"
                        ) from None
                    if host in bind.optional_hosts:
                        # No IPv6 loopback here (EADDRNOTAVAIL/EAFNOSUPPORT): 127.0.0.1 is enough.
                        log.debug("login callback not listening on %s: %s", host, exc)
                        continue
                    if exc.errno == errno.EACCES:
                        raise LoginError(
                            f"not allowed to listen on port {bind.port} for the login callback "
                            f"(redirect_uri {self.redirect_uri}); use a port above 1023 in [oauth] "
                            "redirect_uri (it must match the one registered with Qonic)"
                        ) from None
                    raise LoginError(
                        f"cannot listen on {host} port {bind.port} for the login callback "
                        f"({_clean(exc.strerror or str(exc), 80)}); check [oauth] redirect_uri"
                    ) from None
                self._servers.append(server)
        except BaseException:
            await self.close()
            raise
        log.debug("login callback listening on port %d, path %s", bind.port, bind.path)

    async def wait(self, timeout: float | None = None) -> TokenSet:
        """Wait for the one valid callback, then exchange the code. Always closes the listener."""
        if timeout is None:
            timeout = self._cfg.oauth.login_timeout
        try:
            if self._result is None or self._outcome is None:
                raise RuntimeError("LoginAttempt.wait() needs start() first")
            try:
                result = await asyncio.wait_for(asyncio.shield(self._result), timeout)
            except TimeoutError:
                raise LoginError(
                    f"no login completed within {timeout:g} s; run `qonic-proxy login` to try again"
                ) from None
            if result.error is not None:
                raise LoginError(_refusal_message(result.error, result.description))
            assert result.code is not None
            try:
                tokens = await asyncio.to_thread(
                    exchange_code, self._cfg, code=result.code, code_verifier=self._verifier
                )
            except Exception as exc:
                self._settle(
                    _page(
                        "Login failed",
                        f"Qonic sent the browser back, but getting the token failed: {exc}.",
                        "See the terminal or the qonic-proxy log for details.",
                    )
                )
                raise
            self._settle(_page("Logged in", "Logged in to Qonic. You can close this tab."))
            log.info("logged in to Qonic (scopes: %s)", " ".join(tokens.scopes) or "none")
            return tokens
        finally:
            await self.close()

    def _settle(self, page: bytes) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(page)

    async def close(self) -> None:
        """Stop listening, let the winning tab get its page, drop every other connection."""
        if self._closed:
            return
        self._closed = True
        for server in self._servers:
            server.close()
        self._settle(
            _page(
                "Login received",
                "qonic-proxy received the login; check the terminal or its log for the result.",
            )
        )
        if self._winner is not None and not self._winner.done():
            await asyncio.wait({self._winner}, timeout=5)
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
        if self._result is not None and not self._result.done():
            self._result.set_exception(
                LoginError(
                    "the login was cancelled before it completed; run `qonic-proxy login` to "
                    "try again"
                )
            )
            self._result.exception()  # mark it retrieved: nobody may be waiting

    # -- one connection -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.LimitOverrunError:
            await self._respond(
                writer, 431, _page("Request too large", "The request headers are too large.")
            )
            return
        except TimeoutError:
            await self._respond(writer, 408, _page("Request timeout", "No request was received."))
            return
        except asyncio.IncompleteReadError:
            return  # a preconnect or a client that gave up
        if self._result is None or self._result.done() or self._closed:
            await self._respond(
                writer,
                410,
                _page("Login already finished", "This login has already completed or ended."),
            )
            return
        try:
            callback = self._parse(head)
        except _BadRequest as bad:
            log.debug("login callback: rejected a request (%d: %s)", bad.status, bad)
            extra = {"Allow": "GET"} if bad.status == 405 else {}
            await self._respond(
                writer,
                bad.status,
                _page(
                    "Not a valid login callback",
                    f"{bad}.",
                    "The login is still waiting for Qonic to send the browser back here.",
                ),
                extra,
            )
            return
        # This connection won: close() lets it finish writing its page before dropping others.
        self._winner = asyncio.current_task()
        self._result.set_result(callback)
        if callback.error is not None:
            log.debug("login callback: Qonic sent an error")
            await self._respond(
                writer,
                200,
                _page(
                    "Login refused",
                    f"Qonic refused the login: {callback.error}: {callback.description or ''}",
                    "Run `qonic-proxy login` to try again.",
                ),
            )
            return
        log.debug("login callback: received an authorization code")
        assert self._outcome is not None
        try:
            page = await asyncio.wait_for(asyncio.shield(self._outcome), 120)
        except TimeoutError:
            page = _page("Login received", "Check the terminal or the qonic-proxy log.")
        await self._respond(writer, 200, page)

    def _parse(self, head: bytes) -> _Callback:
        """Strictly check the request line and query; raise _BadRequest for anything else."""
        try:
            request_line = head.split(b"\r\n", 1)[0].decode("ascii")
        except UnicodeDecodeError:
            raise _BadRequest(400, "The request line is not ASCII") from None
        pieces = request_line.split(" ")
        if len(pieces) != 3 or not pieces[2].startswith("HTTP/1."):
            raise _BadRequest(400, "The request line is malformed")
        method, target, _ = pieces
        if not target.startswith("/"):
            raise _BadRequest(400, "The request target is malformed")
        path, _, query = target.partition("?")
        query = query.partition("#")[0]
        if path != self._bind.path:
            raise _BadRequest(404, "There is nothing at this address")
        if method != "GET":
            raise _BadRequest(405, "Only GET is accepted here")
        try:
            pairs = urllib.parse.parse_qsl(
                query,
                keep_blank_values=True,
                strict_parsing=bool(query),
                errors="strict",
                max_num_fields=50,
            )
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest(400, "The query string is malformed") from None
        params: dict[str, str] = {}
        for name, value in pairs:
            if name in _STRICT_PARAMS:
                if name in params:
                    raise _BadRequest(400, f"The parameter {name} appears more than once")
                params[name] = value
        state = params.get("state")
        if state is None:
            raise _BadRequest(400, "The state parameter is missing")
        if not hmac.compare_digest(state.encode("utf-8"), self._state.encode("utf-8")):
            raise _BadRequest(400, "The state does not belong to the login in progress")
        code, error = params.get("code"), params.get("error")
        if (code is None) == (error is None):
            raise _BadRequest(400, "Exactly one of code and error must be present")
        if code is not None:
            if not code:
                raise _BadRequest(400, "The code parameter is empty")
            return _Callback(code=code)
        return _Callback(
            error=_clean(error or "unknown_error", 60) or "unknown_error",
            description=_clean(params.get("error_description", "")) or None,
        )

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: dict[str, str] | None = None,
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
        lines += [f"{name}: {value}" for name, value in _PAGE_HEADERS]
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)


def _refusal_message(error: str, description: str | None) -> str:
    said = f"{error}: {description}" if description else error
    if error == "access_denied":
        todo = "run `qonic-proxy login` again and approve the access"
    else:
        todo = (
            "check [oauth] client_id, scopes and redirect_uri against the application registered "
            "with Qonic, then run `qonic-proxy login` again"
        )
    return f"Qonic refused the login: {said}; {todo}"


def open_browser_in_background(open_browser: Callable[[str], object], url: str) -> None:
    """Run the browser opener in a daemon thread: it may block until a $BROWSER command exits.

    A daemon thread (not the default executor) so that a browser that never returns cannot keep
    the process alive at exit. Its result is ignored: False only means "no browser here", and the
    URL has been printed already.
    """

    def run() -> None:
        try:
            opened = open_browser(url)
        except Exception as exc:
            log.warning(
                "could not start a web browser (%s); open the login URL shown above by hand",
                _clean(str(exc), 120),
            )
            return
        if opened is False:
            log.info("no web browser found; open the login URL shown above by hand")

    threading.Thread(target=run, name="qonic-proxy-browser", daemon=True).start()


async def login(
    cfg: Config,
    *,
    open_browser: Callable[[str], object] | None,
    announce: Callable[[str], None],
) -> TokenSet:
    """Run one browser login end to end and return the tokens (not yet saved)."""
    attempt = LoginAttempt(cfg)
    await attempt.start()
    try:
        announce(attempt.authorize_url)  # always: the machine may have no browser at all
        if open_browser is not None:
            open_browser_in_background(open_browser, attempt.authorize_url)
        return await attempt.wait()
    finally:
        await attempt.close()
