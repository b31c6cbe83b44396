"""Property tests (hypothesis): malformed redirects to the real loopback callback server of a
`LoginAttempt` end in a clean rejection, never a crash or a login. Examples are few and deadlines
set, so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qonic_proxy.config.model import (
    Config,
    OAuthSettings,
    ProxySettings,
    QonicSettings,
    TokenSettings,
)
from qonic_proxy.errors import LoginError
from qonic_proxy.oauth.callback import LoginAttempt
from qonic_proxy.ports import free_port

FAST = settings(max_examples=40, deadline=3000,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def make_cfg(port: int) -> Config:
    return Config(
        path=None,
        qonic=QonicSettings(api_url="https://127.0.0.1:9", ca_file=None,
                            authorize_url="https://127.0.0.1:9/v1/auth/authorize",
                            token_url="https://127.0.0.1:9/v1/auth/token"),  # noqa: S106
        oauth=OAuthSettings(client_id="fuzz", client_secret=None, secret_source="none",
                            scopes=("projects:read",),
                            redirect_uri=f"http://127.0.0.1:{port}/callback",
                            open_browser=False, login_timeout=120),
        proxy=ProxySettings(listen_host="127.0.0.1", port=0, forward_port=0,
                            allowed_hosts=("127.0.0.1",), client_key_file=None,
                            ca_dir=Path("/nonexistent")),
        token=TokenSettings(cache_file=Path("/nonexistent"), refresh_margin=60),
    )


class Loop:
    """An asyncio loop in a thread, so blocking sockets can talk to the real server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Waiting:
    """A started LoginAttempt whose wait() is pending: the property is that it stays pending."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.port = free_port()
        self.attempt = LoginAttempt(make_cfg(self.port))
        loop.run(self.attempt.start())
        self.result = loop.submit(self.attempt.wait(timeout=120))
        self.state = urllib.parse.parse_qs(
            urllib.parse.urlsplit(self.attempt.authorize_url).query)["state"][0]

    def send(self, data: bytes) -> tuple[int, bytes]:
        """Send raw bytes; return (status, body) of the answer, status 0 if closed silently."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            with contextlib.suppress(ConnectionError):
                sock.sendall(data)
            received = b""
            with contextlib.suppress(ConnectionError):
                while chunk := sock.recv(65536):
                    received += chunk
        if not received.startswith(b"HTTP/1.1 "):
            return 0, received
        head, _, body = received.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def close(self) -> None:
        self.loop.run(self.attempt.close())
        with contextlib.suppress(LoginError):
            self.result.result(10)


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    running = Loop()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def waiting(loop: Loop) -> Iterator[Waiting]:
    attempt = Waiting(loop)
    try:
        yield attempt
    finally:
        attempt.close()


_NAMES = st.sampled_from(["state", "code", "error", "error_description", "error_uri", "x", ""])
_VALUES = st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.hex()))


@st.composite
def _query(draw: Any, state: str) -> str:
    """A query string that is never a valid callback, even when it carries the real state."""
    pairs = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=6))
    if draw(st.booleans()):
        # The real state, made invalid: repeated, or with both/neither of code and error.
        pairs = [(n, v) for n, v in pairs if n not in ("state", "code", "error")]
        shape = draw(st.sampled_from(["repeat", "both", "neither", "empty-code", "two-codes"]))
        pairs.append(("state", state))
        if shape == "repeat":
            pairs += [("state", state), ("code", "c")]
        elif shape == "both":
            pairs += [("code", "c"), ("error", "access_denied")]
        elif shape == "empty-code":
            pairs.append(("code", ""))
        elif shape == "two-codes":
            pairs += [("code", "a"), ("code", "b")]
    elif any(name == "state" for name, _ in pairs):
        pass  # a random state never matches the real 43-character one
    return urllib.parse.urlencode(pairs)


_METHODS = st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "get", "G\tT", "GET GET"])
_PATHS = st.sampled_from(["/callback", "/callback/", "/Callback", "/", "//callback", "/x",
                          "/callback%00", "*", "http://127.0.0.1/callback"])


@FAST
@given(data=st.data())
def test_malformed_callbacks_are_rejected_and_the_login_keeps_waiting(waiting: Waiting, data):
    method = data.draw(_METHODS)
    path = data.draw(_PATHS)
    query = data.draw(_query(waiting.state))
    version = data.draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "", "HTTP/1.1 x"]))
    line = f"{method} {path}{'?' + query if query else ''} {version}".encode()
    if data.draw(st.booleans()):
        line = line.replace(b"?", b"?" + data.draw(st.binary(min_size=1, max_size=30)), 1)
    status, body = waiting.send(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
    assert status in (0, 400, 404, 405, 431), (line, status)
    assert b"<script" not in body.lower()
    assert not waiting.result.done()  # nothing malformed ends (or wins) the login


@FAST
@given(data=st.data())
def test_well_formed_requests_with_bad_parameters_are_400(waiting: Waiting, data):
    """The request line is right, so only the parameter rules stand between it and a login."""
    query = data.draw(_query(waiting.state))
    status, _ = waiting.send(f"GET /callback?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 400, query
    assert not waiting.result.done()


def test_huge_and_binary_requests_are_rejected(waiting: Waiting):
    huge = b"GET /callback?state=" + b"a" * 40000 + b" HTTP/1.1\r\n\r\n"
    assert waiting.send(huge)[0] == 431
    headers = b"GET /callback HTTP/1.1\r\n" + b"X: " + b"b" * 20000 + b"\r\n\r\n"
    assert waiting.send(headers)[0] == 431
    assert waiting.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256))
                        + b"\r\n\r\n")[0] == 400  # a TLS ClientHello
    assert waiting.send(b"\r\n\r\n")[0] == 400
    assert not waiting.result.done()


@settings(max_examples=12, deadline=5000,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(description=st.text(min_size=1, max_size=80).map(lambda t: "<script>x</script>" + t))
def test_error_description_is_escaped_and_a_second_callback_is_gone(loop: Loop, description):
    attempt = Waiting(loop)
    try:
        query = urllib.parse.urlencode({"state": attempt.state, "error": "access_denied",
                                        "error_description": description})
        # HTTP/1.1 requires a Host header (RFC 9112 section 3.2); browsers always send one.
        request = f"GET /callback?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        status, body = attempt.send(request.encode())
        assert status == 200
        assert b"<script" not in body.lower() and b"&lt;script&gt;" in body
        second = urllib.parse.urlencode({"state": attempt.state, "code": "late-code"})
        try:
            late, _ = attempt.send(f"GET /callback?{second} HTTP/1.1\r\n\r\n".encode())
        except (ConnectionRefusedError, ConnectionResetError):
            late = 410  # the listener is closed (or closing, when the connect races it): as good
        assert late in (0, 410)
        with pytest.raises(LoginError) as err:
            attempt.result.result(10)
        assert "access_denied" in str(err.value) and "late-code" not in str(err.value)
    finally:
        attempt.close()
