"""The token transport: one POST with http.client, never redirected, capped, proxy env ignored.

Real servers on 127.0.0.1 (http.server, plain and TLS); nothing leaves the machine.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.oauth.transport import post_form
from tests.oauth.support import FakeEndpoint, LocalTls, Recorded, Reply, fake_endpoint, json_body

FORM = b"grant_type=refresh_token&refresh_token=abc"
HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}


class Recorder:
    """A listener that only counts the connections it gets (a stand-in for a proxy)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.accepted = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    listener = Recorder()
    try:
        yield listener
    finally:
        listener.close()


def test_posts_the_form_and_returns_the_answer(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(400, {"error": "invalid_grant"})
    answer = post_form(endpoint.url, HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
    assert answer.status == 400  # an error status is an answer to parse, not an exception
    assert answer.content_type == "application/json"
    assert answer.body == json_body({"error": "invalid_grant"})
    assert "invalid_grant" not in repr(answer)  # the body may hold tokens: not in repr
    [request] = endpoint.requests
    assert (request.method, request.path, request.body) == ("POST", "/v1/auth/token", FORM)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Content-Length"] == str(len(FORM))
    assert request.headers["Host"] == endpoint.url.split("/")[2]


def test_the_query_of_the_url_is_kept(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, {})
    post_form(endpoint.url + "?tenant=a", HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
    assert endpoint.requests[0].path == "/v1/auth/token?tenant=a"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_an_error_and_never_followed(endpoint: FakeEndpoint, status: int) -> None:
    def reply(request: Recorded) -> Reply:
        if request.path == "/v1/auth/token":
            return status, {"Location": "/elsewhere"}, b""
        return 200, {"Content-Type": "application/json"}, b"{}"

    endpoint.reply = reply
    with pytest.raises(TokenEndpointError) as info:
        post_form(endpoint.url, HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
    assert info.value.error_code == "redirect" and info.value.status == status
    assert str(info.value) == (
        f"the token endpoint at {endpoint.url} answered with a redirect (HTTP {status}), which "
        "token endpoints must not do; set [qonic] token_url to the final URL"
    )
    assert [r.path for r in endpoint.requests] == ["/v1/auth/token"]


def test_the_read_is_capped(endpoint: FakeEndpoint) -> None:
    endpoint.reply = (200, {"Content-Type": "application/json"}, b"x" * 50_000)
    answer = post_form(endpoint.url, HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
    assert answer.body == b"x" * 1001  # one byte more than the limit: the parser sees "too big"


def test_proxy_variables_are_ignored(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder, test_tls: LocalTls
) -> None:
    """HTTP(S)_PROXY point at a recording listener; the POST still goes direct."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, recorder.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with fake_endpoint() as plain, fake_endpoint(tls=test_tls.server_context) as tls:
        for server, ca_file in ((plain, None), (tls, test_tls.ca_file)):
            server.set_json(200, {"access_token": "x"})
            answer = post_form(server.url, HEADERS, FORM, ca_file=ca_file, timeout=5, limit=1000)
            assert answer.status == 200
            assert [r.body for r in server.requests] == [FORM]
    assert recorder.accepted == 0


def test_system_trust_through_ssl_cert_file(
    monkeypatch: pytest.MonkeyPatch, test_tls: LocalTls
) -> None:
    """No ca_file: the CA is found where OpenSSL looks for the system store (SSL_CERT_FILE)."""
    with fake_endpoint(tls=test_tls.server_context) as endpoint:
        endpoint.set_json(200, {"access_token": "x"})
        with pytest.raises(TokenEndpointError) as info:
            post_form(endpoint.url, HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
        assert info.value.error_code == "tls_verify"
        monkeypatch.setenv("SSL_CERT_FILE", str(test_tls.ca_file))
        answer = post_form(endpoint.url, HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
        assert answer.status == 200 and len(endpoint.requests) == 1


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://127.0.0.1/t", "https:///no-host", "http://127.0.0.1:99999/t"],
)
def test_unusable_urls_are_a_config_error(url: str) -> None:
    with pytest.raises(TokenEndpointError) as info:
        post_form(url, HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
    assert info.value.error_code == "config" and "[qonic] token_url" in str(info.value)


def test_a_server_that_hangs_up_is_a_network_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/t"

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        try:
            with pytest.raises(TokenEndpointError) as info:
                post_form(url, HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
        finally:
            thread.join(5)
    assert info.value.error_code == "network"
    assert "closed the connection" in str(info.value)


def test_the_retry_after_header_is_returned(endpoint: FakeEndpoint) -> None:
    endpoint.reply = (503, {"Retry-After": "30", "Content-Type": "text/plain"}, b"busy")
    answer = post_form(endpoint.url, HEADERS, FORM, ca_file=None, timeout=5, limit=1000)
    assert (answer.status, answer.retry_after) == (503, "30")
    endpoint.set_json(200, {})
    assert post_form(endpoint.url, HEADERS, FORM, ca_file=None, timeout=5,
                     limit=1000).retry_after is None
