"""A strict, local, Qonic-compatible server: OAuth endpoints plus a few API routes.

Why: the proxy must be tested (and demonstrated) end to end without the real Qonic. The sandbox is
deliberately *stricter* than a lenient test double: exact redirect URIs, PKCE S256 only,
single-use codes with revocation on replay, refresh-token rotation with reuse detection, client
secrets only in the form body. A client that works here will not be surprised by a real server.

Endpoints (see `routes`): `/v1/auth/authorize`, `/v1/auth/consent`, `/v1/auth/token`,
`/v1/auth/scopes`, `/v1/projects`, `/v1/projects/{id}/models`, `.../models/{mid}/download`,
`/v1/upload`, `.../export-ifc/{op}/result`, `/v1/echo`, and unauthenticated test controls under
`/-/sandbox/`. The server only binds to loopback: its test controls have no authentication.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from qonic_proxy.hosts import bracket, is_ip_address
from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context
from qonic_proxy.sandbox.faults import Faults, TokenFault
from qonic_proxy.sandbox.grants import Grants
from qonic_proxy.sandbox.http_server import SandboxServer
from qonic_proxy.sandbox.routes import ROUTES
from qonic_proxy.sandbox.routing import Context
from qonic_proxy.sandbox.settings import SandboxSettings, check_settings

_CERT_IPS = ("127.0.0.1", "127.0.0.2", "::1")


class Sandbox:
    """A running (after `start`) Qonic-compatible server on loopback."""

    def __init__(self, settings: SandboxSettings, *, keep_ca: bool = False) -> None:
        """`keep_ca`: reuse the CA kept in `settings.cert_dir` (the CLI's --cert-dir)."""
        check_settings(settings)
        self.settings = settings
        self.keep_ca = keep_ca and settings.cert_dir is not None
        self._state = Grants(settings)
        self.faults = Faults()
        self._server: SandboxServer | None = None
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
            ip = is_ip_address(s.host)
            hostnames = ["localhost"] + ([] if ip or s.host == "localhost" else [s.host])
            ips = list(_CERT_IPS) + ([s.host] if ip and s.host not in _CERT_IPS else [])
            tls = make_server_tls(Path(cert_dir), hostnames, ips, keep_ca=self.keep_ca)
            self.ca_file = tls.ca_file
            ctx = server_ssl_context(tls)
        context = Context(s, self._state, faults=self.faults)
        if s.token_fault is not None:
            self.faults.set_token_fault(s.token_fault)
        self._server = SandboxServer(context, ROUTES, (s.host, s.port), ctx)
        port = self._server.server_address[1]
        self.url = f"{'https' if s.tls else 'http'}://{bracket(s.host)}:{port}"
        context.url = self._state.issuer = self.url
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
        self.faults.release()
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
        return dict(self._state.snapshot(), faults=self.faults.snapshot())

    def set_token_fault(self, fault: TokenFault) -> None:
        """Token requests get `fault` for its `seconds` from now (see faults.py)."""
        self.faults.set_token_fault(fault)

    def clear_token_fault(self) -> None:
        self.faults.clear_token_fault()

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far answers 401 from now on (refresh tokens still work)."""
        self._state.revoke_access()

    def revoke_grants(self) -> None:
        """Every access and refresh token issued so far is dead (a refresh gets invalid_grant)."""
        self._state.revoke_grants()

    def set_access_token_lifetime(self, seconds: float) -> None:
        """Lifetime of access tokens issued from now on (tokens already issued keep theirs)."""
        self._state.set_access_token_lifetime(seconds)
