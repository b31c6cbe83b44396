"""A stand-in for a running daemon's `/-/` endpoints (no mitmproxy), for CLI and wrap tests."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

AUTHORIZE_URL = "https://qonic.example/v1/auth/authorize?state=fake"


class FakeDaemon(http.server.ThreadingHTTPServer):
    """Answers /-/health with `health` (503 unless logged in) and /-/login with a redirect.

    A GET of /-/login ends the pending login as a success, as the real daemon does once the
    browser comes back.
    """

    daemon_threads = True

    def __init__(self, health: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.health = health
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.login_status = 302

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeDaemon

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append((self.path, dict(self.headers)))
        if self.path == "/-/health":
            health = self.server.health
            body = json.dumps(health).encode()
            self.send_response(200 if health.get("logged_in") else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/-/login":
            self.send_response(self.server.login_status)
            if self.server.login_status == 302:
                self.send_header("Location", AUTHORIZE_URL)
                self.server.health.update(login_in_progress=False, logged_in=True)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


def health_answer(api_url: str, port: int, *, forward_port: int | None, logged_in: bool = True,
                  login_in_progress: bool = False) -> dict[str, Any]:
    """What a daemon for `api_url` on `port` (and `forward_port`) reports on /-/health."""
    return {
        "status": "ok" if logged_in else "login_required",
        "logged_in": logged_in,
        "login_in_progress": login_in_progress,
        "api_url": api_url,
        "pid": 4242,
        "listeners": {
            "reverse": f"http://127.0.0.1:{port}",
            "forward": f"http://127.0.0.1:{forward_port}" if forward_port else None,
        },
    }


@contextlib.contextmanager
def fake_daemon(health: dict[str, Any] | None = None) -> Iterator[FakeDaemon]:
    server = FakeDaemon(health or {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
