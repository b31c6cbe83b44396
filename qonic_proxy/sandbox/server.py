"""A strict, local, Qonic-compatible server: OAuth endpoints plus a few API routes.

Why: the proxy must be tested (and demonstrated) end to end without the real Qonic. The sandbox is
deliberately *stricter* than a lenient test double: exact redirect URIs, PKCE S256 only,
single-use codes with revocation on replay, refresh-token rotation with reuse detection, client
secrets only in the form body. A client that works here will not be surprised by a real server.

Endpoints: `/v1/auth/authorize`, `/v1/auth/consent`, `/v1/auth/token`, `/v1/auth/scopes`,
`/v1/projects`, `/v1/projects/{id}/models`, `.../models/{mid}/download`, `/v1/upload`,
`.../export-ifc/{op}/result`, `/v1/echo`, and unauthenticated test controls under `/-/sandbox/`.
The consent page is a form `POST /v1/auth/consent` with a hidden `consent_id` and a button
`decision` = `approve` | `deny`, so a scripted browser can submit it.

The server only binds to loopback: its test controls have no authentication.
Standard library only (plus `local_ca`, which uses `cryptography`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import html
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from qonic_proxy.hosts import is_loopback_host
from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context

SCOPES: dict[str, str] = {
    "projects:read": "Read your projects",
    "projects:write": "Create and change projects",
    "models:read": "Read models and download model files",
    "models:write": "Upload and change models",
    "issues:read": "Read issues",
    "libraries:read": "Read libraries",
    "libraries:write": "Change libraries",
}

SAMPLE_PROJECTS: list[dict[str, str]] = [
    {"id": "p-1001", "name": "Sandbox Tower"},
    {"id": "p-1002", "name": "Sandbox Bridge"},
    {"id": "p-1003", "name": "Sandbox School"},
]

SAMPLE_MODELS: list[dict[str, str]] = [
    {"id": "m-architecture", "name": "Architecture.ifc"},
    {"id": "m-structure", "name": "Structure.ifc"},
]

PIECE = 64 * 1024
MAX_FORM_BODY = 64 * 1024
DRAIN_LIMIT = 1024 * 1024
MAX_DOWNLOAD = 1 << 40
HANDSHAKE_TIMEOUT = 10.0
CONNECTION_IDLE_TIMEOUT = 60.0
CONSENT_LIFETIME = 600.0
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 1024 * 1024

_PERIOD = 251
_BASE = bytes(range(_PERIOD))
# Long enough that any 64 KiB piece, at any phase, is one slice of it (no per-piece building).
_PIECE_BUF = _BASE * ((PIECE + _PERIOD) // _PERIOD + 1)
_HASH_BLOCK = _BASE * 4096  # whole periods, so consecutive blocks continue the pattern

_PKCE_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def pattern_bytes(offset: int, length: int) -> bytes:
    """The download content: byte i of a file is i % 251 (a prime, so pieces never line up)."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must not be negative")
    start = offset % _PERIOD
    if length <= PIECE:
        return _PIECE_BUF[start : start + length]
    return (_BASE * ((start + length) // _PERIOD + 1))[start : start + length]


def pattern_sha256(size: int) -> str:
    """SHA-256 hex of the first `size` pattern bytes, computed without holding them in memory."""
    digest = hashlib.sha256()
    full, rest = divmod(size, len(_HASH_BLOCK))
    for _ in range(full):
        digest.update(_HASH_BLOCK)
    digest.update(_HASH_BLOCK[:rest])
    return digest.hexdigest()


@dataclass
class SandboxSettings:
    """How the sandbox behaves; the defaults are the strict, common case."""

    host: str = "127.0.0.1"
    port: int = 0
    client_id: str = "sandbox-client"
    client_secret: str | None = field(default="sandbox-secret", repr=False)
    redirect_uris: tuple[str, ...] = ("http://localhost:8765/callback",)
    auto_consent: bool = False
    access_token_lifetime: float = 3600
    issue_refresh_tokens: bool = True
    rotate_refresh_tokens: bool = True
    code_lifetime: float = 60
    token_style: str = "snake"  # noqa: S105 (a style name, not a secret)
    omit_expires_in: bool = False
    error_style: str = "rfc6749"
    tls: bool = True
    cert_dir: Path | None = None
    export_redirect_url: str | None = None
    verbose: bool = False
    refresh_delay: float = 0.0  # seconds a refresh_token grant takes (a far-away token endpoint)


class OAuthError(Exception):
    """A token-endpoint or authorize error with its RFC 6749 code (never carries secrets)."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.status = status


@dataclass
class _Pending:
    """An authorize request waiting for (or having passed) the user's consent."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    challenge: str
    created: float


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scope: str
    challenge: str
    issued: float
    used: bool = False
    grant_id: str | None = None


@dataclass
class _Grant:
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class _Access:
    grant_id: str
    scope: str
    expires: float  # monotonic
    revoked: bool = False


@dataclass
class _Refresh:
    grant_id: str
    used: bool = False


def _new_stats() -> dict[str, Any]:
    return {
        "authorize": 0,
        "consent": 0,
        "token": {
            "authorization_code": {"ok": 0, "error": 0},
            "refresh_token": {"ok": 0, "error": 0},
        },
        "api": {"ok": 0, "unauthorized": 0, "forbidden": 0},
        "authorization_headers_seen": 0,
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _s256(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _add_query(uri: str, params: dict[str, str]) -> str:
    """Append parameters to a registered redirect URI, keeping any query it already has."""
    sep = "&" if urlsplit(uri).query else ("" if uri.endswith("?") else "?")
    return uri + sep + urlencode(params)


class _State:
    """All OAuth state and counters, behind one lock (requests run in many threads)."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.pending: dict[str, _Pending] = {}
        self.codes: dict[str, _Code] = {}
        self.grants: dict[str, _Grant] = {}
        self.access: dict[str, _Access] = {}
        self.refresh: dict[str, _Refresh] = {}
        self.stats = _new_stats()
        self.jwt_key = secrets.token_bytes(32)
        self.issuer = ""

    # -- counters -------------------------------------------------------------------------
    def count(self, *path: str) -> None:
        with self.lock:
            node: Any = self.stats
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] += 1

    # -- tokens ---------------------------------------------------------------------------
    def _new_access_token(self, scope: str, lifetime: float) -> str:
        if not self.settings.omit_expires_in:
            return secrets.token_urlsafe(32)
        now = time.time()
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "iss": self.issuer,
            "sub": "sandbox-user",
            "aud": self.settings.client_id,
            "iat": int(now),
            "exp": int(now + lifetime),
            "scope": scope,
            "jti": secrets.token_urlsafe(12),
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(payload, separators=(",", ":")).encode())
        )
        sig = hmac.new(self.jwt_key, signing_input.encode("ascii"), hashlib.sha256).digest()
        return signing_input + "." + _b64url(sig)

    def issue(self, grant_id: str, scope: str, *, with_refresh: bool) -> dict[str, Any]:
        """Mint tokens for a grant (caller holds the lock) and shape the response body."""
        lifetime = self.settings.access_token_lifetime
        access = self._new_access_token(scope, lifetime)
        self.access[access] = _Access(grant_id, scope, time.monotonic() + lifetime)
        refresh = None
        if with_refresh:
            refresh = secrets.token_urlsafe(32)
            self.refresh[refresh] = _Refresh(grant_id)
        camel = self.settings.token_style == "camel"  # noqa: S105
        body: dict[str, Any] = {
            ("accessToken" if camel else "access_token"): access,
            ("tokenType" if camel else "token_type"): "Bearer",
        }
        if not self.settings.omit_expires_in:
            body["expiresIn" if camel else "expires_in"] = int(lifetime)
        if refresh is not None:
            body["refreshToken" if camel else "refresh_token"] = refresh
        body["scope"] = scope
        return body

    def check_access(self, token: str) -> _Access | None:
        with self.lock:
            rec = self.access.get(token)
            if rec is None or rec.revoked or time.monotonic() >= rec.expires:
                return None
            grant = self.grants.get(rec.grant_id)
            if grant is None or grant.revoked:
                return None
            return rec

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

    # -- authorize / consent --------------------------------------------------------------
    def new_code(self, pending: _Pending) -> str:
        code = secrets.token_urlsafe(32)
        with self.lock:
            self.codes[code] = _Code(
                pending.client_id,
                pending.redirect_uri,
                pending.scope,
                pending.challenge,
                time.monotonic(),
            )
        return code

    def new_consent(self, pending: _Pending) -> str:
        consent_id = secrets.token_urlsafe(24)
        with self.lock:
            now = time.monotonic()
            for key in [k for k, p in self.pending.items() if now - p.created > CONSENT_LIFETIME]:
                del self.pending[key]
            self.pending[consent_id] = pending
        return consent_id

    def take_consent(self, consent_id: str) -> _Pending | None:
        with self.lock:
            pending = self.pending.pop(consent_id, None)
        if pending is None or time.monotonic() - pending.created > CONSENT_LIFETIME:
            return None
        return pending

    # -- token endpoint -------------------------------------------------------------------
    def authenticate_client(self, form: dict[str, str], authorization: str | None) -> None:
        s = self.settings
        if authorization is not None:
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

    def exchange_code(self, form: dict[str, str]) -> dict[str, Any]:
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
            if time.monotonic() - rec.issued > self.settings.code_lifetime:
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
                _s256(verifier), rec.challenge
            ):
                raise OAuthError("invalid_grant", "code_verifier does not match code_challenge.")
            rec.used = True
            grant_id = secrets.token_hex(8)
            rec.grant_id = grant_id
            self.grants[grant_id] = _Grant(rec.client_id, rec.scope)
            return self.issue(grant_id, rec.scope, with_refresh=self.settings.issue_refresh_tokens)

    def use_refresh(self, form: dict[str, str]) -> dict[str, Any]:
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
            return self.issue(rec.grant_id, scope, with_refresh=rotate)


class _Server(HTTPServer):
    """HTTPServer whose TLS handshake happens in the connection's own thread, tracked for stop."""

    daemon_threads = True

    def __init__(self, sandbox: Sandbox, address: tuple[str, int], ctx: ssl.SSLContext | None):
        self.sandbox = sandbox
        self.ssl_context = ctx
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._conn_lock = threading.Lock()
        self._conns: dict[threading.Thread, socket.socket] = {}
        self._closing = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); we need no server_name.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="sandbox-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._conns[thread] = request
        thread.start()

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        me = threading.current_thread()
        conn: socket.socket = sock
        try:
            if self.ssl_context is not None:
                sock.settimeout(HANDSHAKE_TIMEOUT)
                # wrap_socket takes over the file descriptor: register the new object before
                # the (possibly slow) handshake so that stop() can interrupt it.
                conn = self.ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
                with self._conn_lock:
                    self._conns[me] = conn
                    closing = self._closing
                if closing:
                    return
                try:
                    conn.do_handshake()
                except (OSError, ssl.SSLError):
                    return
            self.finish_request(conn, client_address)
        except Exception:
            self.handle_error(conn, client_address)
        finally:
            with self._conn_lock:
                self._conns.pop(me, None)
            try:
                _lingering_close(conn)
            finally:
                if conn is not sock:
                    sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _report_internal_error()

    def close_connections(self, timeout: float) -> None:
        """Wake every connection thread (idle keep-alive ones block in recv) and join them."""
        with self._conn_lock:
            self._closing = True
            items = list(self._conns.items())
        for _, conn in items:
            # The plain socket's shutdown: SSLSocket.shutdown would drop its SSL object
            # under the feet of the thread still using it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread, _ in items:
            thread.join(max(0.0, deadline - time.monotonic()))


def _lingering_close(conn: socket.socket) -> None:
    """Close without a reset: half-close, then discard what the client still sends for a moment.

    Closing a socket with unread input makes the kernel send RST, which can destroy a response
    (say a 400 to a body we refused to read) before the client has read it.
    """
    try:
        # The plain socket's methods: the TLS layer is done with, we only discard bytes.
        socket.socket.shutdown(conn, socket.SHUT_WR)
        conn.settimeout(LINGER_TIMEOUT)
        deadline = time.monotonic() + LINGER_TIMEOUT
        discarded = 0
        while time.monotonic() < deadline and discarded < LINGER_BYTES:
            data = socket.socket.recv(conn, PIECE)
            if not data:
                break
            discarded += len(data)
    except OSError:
        pass
    finally:
        conn.close()


def _report_internal_error() -> None:
    """Print where an internal error happened, without its message (it might hold a value)."""
    exc_type, _, tb = sys.exc_info()
    if exc_type is None:
        return
    if issubclass(exc_type, (ConnectionError, TimeoutError, ssl.SSLError)):
        return
    frames = traceback.extract_tb(tb)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    print(f"sandbox: internal error {exc_type.__name__} at {where}", file=sys.stderr, flush=True)


class _BodyError(Exception):
    """The request body is malformed or the client went away mid-body."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "qonic-sandbox"
    timeout = CONNECTION_IDLE_TIMEOUT
    server: _Server

    # -- plumbing -------------------------------------------------------------------------
    @property
    def sandbox(self) -> Sandbox:
        return self.server.sandbox

    @property
    def state(self) -> _State:
        return self.server.sandbox._state

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # The default logs the request line, query included (codes, state): never.
        return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.sandbox.settings.verbose:
            raw_path = getattr(self, "path", None) or "-"
            path = quote(raw_path.split("?", 1)[0], safe="/-._~%:@!$&'()*+,;=")
            status = code.value if isinstance(code, HTTPStatus) else code
            method = quote(self.command or "-", safe="")
            print(f"sandbox: {method} {path} {status}", file=sys.stderr, flush=True)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True

    def handle_one_request(self) -> None:
        self._body_state = "none"  # none | unread | read
        self._sent = False
        super().handle_one_request()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

    def _dispatch(self) -> None:
        if self.headers.get("Authorization") is not None:
            self.state.count("authorization_headers_seen")
        try:
            self._prepare_body()
            self._route()
        except _BodyError as exc:
            self.close_connection = True
            if not self._sent:
                self._send_json(400, {"error": "invalid_request", "error_description": str(exc)})
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except Exception:
            _report_internal_error()
            self.close_connection = True
            if not self._sent:
                self._send_json(500, {"error": "server_error", "error_description": "Internal."})

    # -- request bodies -------------------------------------------------------------------
    def _prepare_body(self) -> None:
        te = self.headers.get_all("Transfer-Encoding") or []
        cl = self.headers.get_all("Content-Length") or []
        if te and cl:
            raise _BodyError("Content-Length and Transfer-Encoding must not both be sent.")
        if te:
            if [v.strip().lower() for v in te] != ["chunked"]:
                raise _BodyError("Only Transfer-Encoding: chunked is supported.")
            self._body_chunked = True
            self._body_length = -1
            self._body_state = "unread"
        elif cl:
            if len(cl) != 1 or not cl[0].strip().isdigit():
                raise _BodyError("Content-Length is malformed.")
            self._body_chunked = False
            self._body_length = int(cl[0])
            self._body_state = "unread" if self._body_length else "read"
        else:
            self._body_chunked = False
            self._body_length = 0
            self._body_state = "read"

    def _body_chunks(self) -> Iterator[bytes]:
        """Yield the request body in pieces (Content-Length or chunked), never all at once."""
        if self._body_state != "unread":
            return
        self._body_state = "read"
        if not self._body_chunked:
            remaining = self._body_length
            while remaining:
                data = self.rfile.read(min(remaining, PIECE))
                if not data:
                    raise _BodyError("The request body ended early.")
                remaining -= len(data)
                yield data
            return
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise _BodyError("A chunk size line is malformed.")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BodyError("A chunk size line is malformed.") from None
            if size == 0:
                break
            while size:
                data = self.rfile.read(min(size, PIECE))
                if not data:
                    raise _BodyError("The request body ended early.")
                size -= len(data)
                yield data
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BodyError("A chunk is not followed by CRLF.")
        while True:  # trailers
            line = self.rfile.readline(8192)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                raise _BodyError("The chunked trailer is malformed.")

    def _read_small_body(self, limit: int) -> bytes:
        out = bytearray()
        for chunk in self._body_chunks():
            out += chunk
            if len(out) > limit:
                raise _BodyError("The request body is too large for this endpoint.")
        return bytes(out)

    def _settle_body_before_response(self, headers: dict[str, str]) -> None:
        """Keep the connection in sync: drain a small unread body, else close after answering."""
        if self._body_state != "unread":
            return
        if not self._body_chunked and self._body_length <= DRAIN_LIMIT:
            try:
                for _ in self._body_chunks():
                    pass
                return
            except _BodyError:
                pass
        self._body_state = "read"
        self.close_connection = True
        headers["Connection"] = "close"

    # -- responses ------------------------------------------------------------------------
    def _start(self, status: int, headers: dict[str, str]) -> None:
        self._settle_body_before_response(headers)
        self._sent = True
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection and "Connection" not in headers:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_bytes(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        self._start(status, all_headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, indent=None).encode("utf-8")
        self._send_bytes(status, body, "application/json", headers)

    def _send_html(self, status: int, title: str, body_html: str) -> None:
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body>{body_html}</body></html>"
        ).encode()
        self._send_bytes(
            status,
            page,
            "text/html; charset=utf-8",
            {
                "Cache-Control": "no-store",
                "X-Frame-Options": "DENY",
                "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
        )

    def _redirect(self, location: str, extra: dict[str, str] | None = None) -> None:
        headers = {"Location": location, "Content-Length": "0", "Cache-Control": "no-store"}
        headers.update(extra or {})
        self._start(302, headers)

    def _not_found(self) -> None:
        self._send_json(404, {"error": "not_found", "error_description": "No such resource."})

    def _method_not_allowed(self, allowed: str) -> None:
        self._send_json(
            405,
            {"error": "method_not_allowed", "error_description": f"Use {allowed}."},
            {"Allow": allowed},
        )

    # -- routing --------------------------------------------------------------------------
    def _route(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        self._query = parts.query
        if path == "/v1/auth/authorize":
            if self.command != "GET":
                return self._method_not_allowed("GET")
            return self._authorize()
        if path == "/v1/auth/consent":
            if self.command != "POST":
                return self._method_not_allowed("POST")
            return self._consent()
        if path == "/v1/auth/token":
            if self.command != "POST":
                return self._method_not_allowed("POST")
            return self._token()
        if path == "/v1/auth/scopes":
            if self.command != "GET":
                return self._method_not_allowed("GET")
            scopes = [{"name": k, "description": v} for k, v in SCOPES.items()]
            return self._send_json(200, scopes)
        if path.startswith("/-/sandbox/"):
            return self._control(path)
        if path.startswith("/v1/"):
            return self._api(path)
        return self._not_found()

    # -- OAuth: authorize and consent -----------------------------------------------------
    def _authorize(self) -> None:
        self.state.count("authorize")
        s = self.sandbox.settings
        params = parse_qs(self._query, keep_blank_values=True)

        def one(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        client_id = one("client_id")
        redirect_uri = one("redirect_uri")
        if not client_id or len(params.get("client_id", [])) != 1 or client_id != s.client_id:
            return self._send_html(
                400,
                "Unknown application",
                "<h1>Unknown application</h1><p>The client_id "
                f"<code>{html.escape(client_id or '')}</code> is not registered.</p>",
            )
        if (
            not redirect_uri
            or len(params.get("redirect_uri", [])) != 1
            or redirect_uri not in s.redirect_uris
        ):
            return self._send_html(
                400,
                "Invalid redirect_uri",
                "<h1>Invalid redirect_uri</h1><p>The redirect_uri "
                f"<code>{html.escape(redirect_uri or '')}</code> is not registered for this "
                "application; it must match a registered URI exactly.</p>",
            )
        state = one("state")

        def fail(code: str, description: str) -> None:
            out = {"error": code, "error_description": description}
            if state is not None:
                out["state"] = state
            self._redirect(_add_query(redirect_uri, out))

        duplicated = [k for k, v in params.items() if len(v) > 1]
        if duplicated:
            return fail("invalid_request", f"Parameter {sorted(duplicated)[0]} is repeated.")
        response_type = one("response_type")
        if not response_type:
            return fail("invalid_request", "response_type is missing.")
        if response_type != "code":
            return fail("unsupported_response_type", "Only response_type=code is supported.")
        method = one("code_challenge_method")
        challenge = one("code_challenge")
        if method != "S256":
            return fail("invalid_request", "PKCE with code_challenge_method=S256 is required.")
        if not challenge or not _PKCE_RE.match(challenge):
            return fail("invalid_request", "code_challenge is missing or malformed.")
        scope_text = one("scope")
        wanted = (scope_text or "").split(" ")
        if not scope_text or any(w not in SCOPES for w in wanted):
            return fail("invalid_scope", "scope must be a space-separated list of known scopes.")
        pending = _Pending(client_id, redirect_uri, scope_text, state, challenge, time.monotonic())
        if s.auto_consent:
            return self._approve(pending)
        consent_id = self.state.new_consent(pending)
        items = "".join(f"<li>{html.escape(SCOPES[w])} (<code>{html.escape(w)}</code>)</li>"
                        for w in wanted)
        self._send_html(
            200,
            "Allow access?",
            "<h1>Allow access?</h1>"
            f"<p>The application <b>{html.escape(client_id)}</b> asks to:</p><ul>{items}</ul>"
            '<form method="post" action="/v1/auth/consent">'
            f'<input type="hidden" name="consent_id" value="{html.escape(consent_id)}">'
            '<button type="submit" name="decision" value="approve">Allow</button> '
            '<button type="submit" name="decision" value="deny">Deny</button>'
            "</form>",
        )

    def _approve(self, pending: _Pending) -> None:
        code = self.state.new_code(pending)
        out = {"code": code}
        if pending.state is not None:
            out["state"] = pending.state
        self._redirect(_add_query(pending.redirect_uri, out))

    def _consent(self) -> None:
        self.state.count("consent")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self._send_html(400, "Bad request", "<h1>Bad request</h1><p>Form expected.</p>")
        form = parse_qs(self._read_small_body(MAX_FORM_BODY).decode("utf-8", "replace"))
        consent_id = (form.get("consent_id") or [""])[0]
        decision = (form.get("decision") or [""])[0]
        pending = self.state.take_consent(consent_id) if consent_id else None
        if pending is None:
            return self._send_html(
                400,
                "Consent expired",
                "<h1>This consent request is no longer valid</h1>"
                "<p>Start the login again from the application.</p>",
            )
        if decision == "approve":
            return self._approve(pending)
        out = {"error": "access_denied", "error_description": "The user denied access."}
        if pending.state is not None:
            out["state"] = pending.state
        self._redirect(_add_query(pending.redirect_uri, out))

    # -- OAuth: token ---------------------------------------------------------------------
    def _token_error(self, err: OAuthError) -> None:
        if self.sandbox.settings.error_style == "qonic":
            body: dict[str, str] = {"errorDetails": f"{err.code}: {err.description}"}
        else:
            body = {"error": err.code, "error_description": err.description}
        self._send_json(err.status, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _token(self) -> None:
        grant_type = ""
        try:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise OAuthError(
                    "invalid_request", "The body must be application/x-www-form-urlencoded."
                )
            raw = self._read_small_body(MAX_FORM_BODY)
            try:
                parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            except UnicodeDecodeError:
                raise OAuthError("invalid_request", "The body is not UTF-8.") from None
            repeated = sorted(k for k, v in parsed.items() if len(v) > 1)
            form = {k: v[0] for k, v in parsed.items()}
            grant_type = form.get("grant_type", "")
            if repeated:
                raise OAuthError("invalid_request", f"Parameter {repeated[0]} is repeated.")
            if grant_type not in ("authorization_code", "refresh_token"):
                grant_type = ""
                raise OAuthError(
                    "unsupported_grant_type",
                    "grant_type must be authorization_code or refresh_token.",
                )
            self.state.authenticate_client(form, self.headers.get("Authorization"))
            if grant_type == "authorization_code":
                body = self.state.exchange_code(form)
            else:
                if not self.sandbox.settings.issue_refresh_tokens:
                    raise OAuthError("unsupported_grant_type", "Refresh tokens are not issued.")
                if self.sandbox.settings.refresh_delay:
                    time.sleep(self.sandbox.settings.refresh_delay)
                body = self.state.use_refresh(form)
        except OAuthError as err:
            if grant_type:
                self.state.count("token", grant_type, "error")
            return self._token_error(err)
        self.state.count("token", grant_type, "ok")
        self._send_json(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- API ------------------------------------------------------------------------------
    def _bearer(self) -> tuple[str | None, _Access | None]:
        values = self.headers.get_all("Authorization") or []
        if len(values) != 1:
            return None, None
        scheme, _, token = values[0].partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, None
        return token, self.state.check_access(token)

    def _unauthorized(self, description: str) -> None:
        self.state.count("api", "unauthorized")
        challenge = (
            'Bearer realm="qonic-sandbox", error="invalid_token", '
            f'error_description="{description}"'
        )
        self._send_json(
            401,
            {"error": "invalid_token", "error_description": description},
            {"WWW-Authenticate": challenge},
        )

    def _api(self, path: str) -> None:
        segments = path.strip("/").split("/")[1:]  # after "v1"
        route = self._match(segments)
        token, access = self._bearer()
        if access is None:
            if token is None:
                return self._unauthorized("A bearer token is required.")
            return self._unauthorized("The access token is invalid, expired or revoked.")
        if route is None:
            return self._not_found()
        scope, handler, methods = route
        if scope is not None and scope not in access.scope.split():
            self.state.count("api", "forbidden")
            return self._send_json(
                403,
                {"error": "insufficient_scope", "error_description": f"Needs scope {scope}."},
                {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        if methods and self.command not in methods:
            return self._method_not_allowed(", ".join(methods))
        self.state.count("api", "ok")
        handler(segments)

    def _match(self, seg: list[str]) -> tuple[str | None, Any, tuple[str, ...]] | None:
        n = len(seg)
        if seg == ["projects"]:
            return "projects:read", self._projects, ("GET",)
        if n == 3 and seg[0] == "projects" and seg[2] == "models":
            return "models:read", self._models, ("GET",)
        if n == 5 and seg[0] == "projects" and seg[2] == "models" and seg[4] == "download":
            return "models:read", self._download, ("GET",)
        if (
            n == 7
            and seg[0] == "projects"
            and seg[2] == "models"
            and seg[4] == "export-ifc"
            and seg[6] == "result"
        ):
            return "models:read", self._export_result, ("GET",)
        if seg == ["upload"]:
            return "models:write", self._upload, ("POST", "PUT")
        if seg == ["echo"]:
            return None, self._echo, ()
        return None

    def _projects(self, seg: list[str]) -> None:
        self._send_json(200, SAMPLE_PROJECTS)

    def _models(self, seg: list[str]) -> None:
        self._send_json(200, [dict(m, projectId=seg[1]) for m in SAMPLE_MODELS])

    def _download(self, seg: list[str]) -> None:
        args = parse_qs(self._query)
        try:
            size = int((args.get("size") or ["1048576"])[0])
            delay = float((args.get("chunk_delay") or ["0"])[0])
        except ValueError:
            size, delay = -1, -1.0
        if not 0 <= size <= MAX_DOWNLOAD or not 0 <= delay <= 30:
            return self._send_json(
                400,
                {"error": "invalid_request", "error_description": "Bad size or chunk_delay."},
            )
        chunked = (args.get("chunked") or ["0"])[0] == "1" and self.request_version == "HTTP/1.1"
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{_safe_name(seg[3])}.ifc"',
        }
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(size)
        self._start(200, headers)
        offset = 0
        while offset < size:
            if offset and delay:
                time.sleep(delay)
            piece = pattern_bytes(offset, min(PIECE, size - offset))
            if chunked:
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            offset += len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _upload(self, seg: list[str]) -> None:
        digest = hashlib.sha256()
        n = 0
        for chunk in self._body_chunks():
            digest.update(chunk)
            n += len(chunk)
        self._send_json(200, {"bytes": n, "sha256": digest.hexdigest()})

    def _export_result(self, seg: list[str]) -> None:
        target = self.sandbox.settings.export_redirect_url or (
            self.sandbox.url + "/-/sandbox/exported.ifc"
        )
        self._redirect(target)

    def _echo(self, seg: list[str]) -> None:
        digest = hashlib.sha256()
        n = 0
        for chunk in self._body_chunks():
            digest.update(chunk)
            n += len(chunk)
        headers: dict[str, str] = {}
        for name in dict.fromkeys(self.headers.keys()):
            values = self.headers.get_all(name) or []
            if name.lower() == "authorization":
                _, access = self._bearer()
                headers[name] = "<valid bearer>" if access is not None else "<invalid>"
            else:
                headers[name] = ", ".join(values)
        self._send_json(
            200,
            {
                "method": self.command,
                "path": urlsplit(self.path).path,
                "query": self._query,
                "args": parse_qs(self._query, keep_blank_values=True),
                "headers": headers,
                "bytes": n,
                "sha256": digest.hexdigest(),
            },
        )

    # -- test controls --------------------------------------------------------------------
    def _control(self, path: str) -> None:
        name = path[len("/-/sandbox/") :]
        if name == "stats" and self.command == "GET":
            return self._send_json(200, self.sandbox.stats())
        if name == "exported.ifc" and self.command == "GET":
            return self._send_bytes(200, pattern_bytes(0, 4096), "application/octet-stream")
        if name == "revoke" and self.command == "POST":
            what = (parse_qs(self._query).get("what") or [""])[0]
            if what == "access":
                self.sandbox.revoke_access_tokens()
            elif what == "grants":
                self.sandbox.revoke_grants()
            else:
                return self._send_json(400, {"error": "what must be access or grants"})
            return self._send_json(200, {"revoked": what})
        if name == "config" and self.command == "POST":
            try:
                data = json.loads(self._read_small_body(MAX_FORM_BODY) or b"null")
            except ValueError:
                data = None
            if (
                not isinstance(data, dict)
                or set(data) != {"access_token_lifetime"}
                or not isinstance(data["access_token_lifetime"], int | float)
                or data["access_token_lifetime"] <= 0
            ):
                return self._send_json(
                    400, {"error": 'expected {"access_token_lifetime": seconds > 0}'}
                )
            self.sandbox.set_access_token_lifetime(float(data["access_token_lifetime"]))
            return self._send_json(200, {"access_token_lifetime": data["access_token_lifetime"]})
        return self._not_found()


class Sandbox:
    """A running (after `start`) Qonic-compatible server on loopback."""

    def __init__(self, settings: SandboxSettings) -> None:
        if not is_loopback_host(settings.host):
            raise ValueError(
                f"The sandbox listens on loopback only (its test controls have no auth); "
                f"got host {settings.host!r}."
            )
        if settings.token_style not in ("snake", "camel"):
            raise ValueError("token_style must be 'snake' or 'camel'.")
        if settings.error_style not in ("rfc6749", "qonic"):
            raise ValueError("error_style must be 'rfc6749' or 'qonic'.")
        self.settings = settings
        self._state = _State(settings)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: Path | None = None
        self.url = ""
        self.ca_file: Path | None = None

    def __repr__(self) -> str:
        return f"Sandbox(url={self.url!r})"

    def start(self) -> None:
        """Bind, listen and serve in a background thread; returns once connections are accepted."""
        if self._server is not None:
            raise RuntimeError("The sandbox is already running.")
        s = self.settings
        ctx = None
        if s.tls:
            cert_dir = s.cert_dir
            if cert_dir is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="qonic-sandbox-"))
                cert_dir = self._tmpdir
            hostnames = ["localhost"]
            if s.host not in hostnames and not _is_ip(s.host):
                hostnames.append(s.host)
            ips = ["127.0.0.1", "127.0.0.2", "::1"]
            if _is_ip(s.host) and s.host not in ips:
                ips.append(s.host)
            tls = make_server_tls(Path(cert_dir), hostnames, ips)
            self.ca_file = tls.ca_file
            ctx = server_ssl_context(tls)
        self._server = _Server(self, (s.host, s.port), ctx)
        port = self._server.server_address[1]
        host = f"[{s.host}]" if ":" in s.host else s.host
        self.url = f"{'https' if s.tls else 'http'}://{host}:{port}"
        self._state.issuer = self.url
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sandbox-accept",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close the listening socket, end open connections, join threads."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections(timeout=5.0)
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """A snapshot of the request counters (a deep copy: safe to keep and compare)."""
        with self._state.lock:
            return json.loads(json.dumps(self._state.stats))

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far answers 401 from now on (refresh tokens still work)."""
        self._state.revoke_access()

    def revoke_grants(self) -> None:
        """Every access and refresh token issued so far is dead (a refresh gets invalid_grant)."""
        self._state.revoke_grants()

    def set_access_token_lifetime(self, seconds: float) -> None:
        """Lifetime of access tokens issued from now on (tokens already issued keep theirs)."""
        if seconds <= 0:
            raise ValueError("The access token lifetime must be positive.")
        with self._state.lock:
            self.settings.access_token_lifetime = seconds


def _safe_name(text: str) -> str:
    """A path segment made harmless for a header value."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100] or "model"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qonic-proxy sandbox",
        description="Run a strict local Qonic-compatible server (OAuth + a few API routes).",
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    p.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    p.add_argument("--client-id", default="sandbox-client")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--client-secret",
        default=None,
        help="client secret (default: $SANDBOX_CLIENT_SECRET, else 'sandbox-secret')",
    )
    secret.add_argument("--public", action="store_true", help="a public client (no secret)")
    p.add_argument(
        "--redirect-uri",
        action="append",
        default=None,
        help="registered redirect URI (repeatable; default http://localhost:8765/callback)",
    )
    p.add_argument("--auto-consent", action="store_true", help="skip the consent page")
    p.add_argument("--access-token-lifetime", type=float, default=3600.0)
    p.add_argument("--code-lifetime", type=float, default=60.0)
    p.add_argument("--no-refresh-tokens", action="store_true")
    p.add_argument("--no-rotate-refresh-tokens", action="store_true")
    p.add_argument("--token-style", choices=("snake", "camel"), default="snake")
    p.add_argument(
        "--jwt", action="store_true", help="omit expires_in; access tokens are JWTs with exp"
    )
    p.add_argument("--error-style", choices=("rfc6749", "qonic"), default="rfc6749")
    p.add_argument("--export-redirect-url", default=None)
    p.add_argument("--cert-dir", type=Path, default=None)
    p.add_argument("--plain-http", action="store_true", help="serve plain HTTP instead of HTTPS")
    p.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """`qonic-proxy sandbox`: serve until SIGTERM/SIGINT, after one `sandbox ready:` line."""
    args = _parser().parse_args(argv)
    if args.public:
        client_secret = None
    else:
        client_secret = (
            os.environ.get("SANDBOX_CLIENT_SECRET") or args.client_secret or "sandbox-secret"
        )
    if args.access_token_lifetime <= 0 or args.code_lifetime <= 0:
        print("sandbox: lifetimes must be positive numbers of seconds.", file=sys.stderr)
        return 2
    settings = SandboxSettings(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=client_secret,
        redirect_uris=tuple(args.redirect_uri or ("http://localhost:8765/callback",)),
        auto_consent=args.auto_consent,
        access_token_lifetime=args.access_token_lifetime,
        issue_refresh_tokens=not args.no_refresh_tokens,
        rotate_refresh_tokens=not args.no_rotate_refresh_tokens,
        code_lifetime=args.code_lifetime,
        token_style=args.token_style,
        omit_expires_in=args.jwt,
        error_style=args.error_style,
        tls=not args.plain_http,
        cert_dir=args.cert_dir,
        export_redirect_url=args.export_redirect_url,
        verbose=args.verbose,
    )
    try:
        sandbox = Sandbox(settings)
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    previous: dict[int, Any] = {}
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            sandbox.start()
        except OSError as exc:
            print(
                f"sandbox: cannot listen on {args.host}:{args.port} ({exc.strerror}); "
                "choose another --port.",
                file=sys.stderr,
            )
            return 1
        ca = str(sandbox.ca_file) if sandbox.ca_file else ""
        print(f"sandbox ready: url={sandbox.url} ca_file={ca}", flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
