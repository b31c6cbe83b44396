"""Shared pieces of the OAuth tests: a config, a tiny token endpoint, a blocking 'browser'.

Everything talks to servers started here on 127.0.0.1 / ::1; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import http.server
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qonic_proxy.config.model import (
    Config,
    OAuthSettings,
    ProxySettings,
    QonicSettings,
    TokenSettings,
)
from qonic_proxy.ports import free_port

__all__ = ["free_port"]


SECRET = "s3cr3t-client-secret-value"
CODE = "authcode-0123456789-abcdef"
ACCESS = "access-token-ZYXWVUTSRQ-0987654321"
REFRESH = "refresh-token-QWERTYUIOP-1234567890"


def make_cfg(
    *,
    token_url: str = "https://api.qonic.com/v1/auth/token",  # noqa: S107 - a URL
    authorize_url: str = "https://api.qonic.com/v1/auth/authorize",
    redirect_uri: str = "http://localhost:8765/callback",
    secret: str | None = SECRET,
    scopes: tuple[str, ...] = ("projects:read", "models:read"),
    ca_file: Path | None = None,
    login_timeout: float = 10,
) -> Config:
    return Config(
        path=None,
        qonic=QonicSettings(
            api_url="https://api.qonic.com",
            authorize_url=authorize_url,
            token_url=token_url,
            ca_file=ca_file,
        ),
        oauth=OAuthSettings(
            client_id="my-client",
            client_secret=secret,
            secret_source="env" if secret else "none",
            scopes=scopes,
            redirect_uri=redirect_uri,
            open_browser=False,
            login_timeout=login_timeout,
        ),
        proxy=ProxySettings(
            listen_host="127.0.0.1",
            port=8080,
            forward_port=0,
            allowed_hosts=("127.0.0.1", "localhost"),
            client_key_file=None,
            ca_dir=Path("/nonexistent"),
        ),
        token=TokenSettings(cache_file=Path("/nonexistent/tokens.json"), refresh_margin=60),
    )


def json_body(data: object) -> bytes:
    return json.dumps(data).encode()


def make_jwt(claims: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.{b64(b'not-a-real-signature')}"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.body.decode(), keep_blank_values=True)


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class FakeEndpoint:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    reply: Reply | Callable[[Recorded], Reply] = (200, {}, b"")

    def set_json(self, status: int, data: object) -> None:
        self.reply = (status, {"Content-Type": "application/json"}, json_body(data))


def token_reply(**extra: Any) -> dict[str, Any]:
    data = {"access_token": ACCESS, "token_type": "Bearer", "expires_in": 3600}
    data.update(extra)
    return data


@contextlib.contextmanager
def fake_endpoint(tls: ssl.SSLContext | None = None) -> Iterator[FakeEndpoint]:
    endpoint = FakeEndpoint(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            record = Recorded(
                self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
            )
            endpoint.requests.append(record)
            reply = endpoint.reply(record) if callable(endpoint.reply) else endpoint.reply
            status, headers, body = reply
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)
            self.close_connection = True

        do_POST = _serve
        do_GET = _serve

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # refused handshakes and clients that hang up are part of the tests

    server = Server(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    endpoint.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/v1/auth/token"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass(frozen=True)
class LocalTls:
    ca_file: Path
    server_context: ssl.SSLContext


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str


def browse(port: int, target: str, method: str = "GET", host: str = "127.0.0.1") -> Page:
    """A blocking 'browser' request, bounded in time."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        return Page(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read().decode(),
        )
    finally:
        conn.close()


async def abrowse(port: int, target: str, method: str = "GET", host: str = "127.0.0.1") -> Page:
    return await asyncio.to_thread(browse, port, target, method, host)


def refused(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except (ConnectionRefusedError, ConnectionResetError):  # reset: a connect racing the close
        return True


def state_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["state"][0]


def run(coro: Any, timeout: float = 30) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def callback_cfg(endpoint: FakeEndpoint, port: int, host: str = "127.0.0.1", **kw: Any) -> Config:
    return make_cfg(token_url=endpoint.url, redirect_uri=f"http://{host}:{port}/callback", **kw)


SAFE_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'",
    "referrer-policy": "no-referrer",
    "connection": "close",
}


def assert_safe_page(page: Page) -> None:
    for name, value in SAFE_HEADERS.items():
        assert page.headers.get(name) == value, name
    assert "http" not in page.body.lower().replace("http-equiv", "")  # no external resources
    assert "<script" not in page.body.lower()
