"""The loopback callback server of a LoginAttempt, over real sockets on 127.0.0.1 / ::1."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import urllib.parse

import pytest

from qonic_proxy.errors import LoginError, QonicProxyError, TokenEndpointError
from qonic_proxy.oauth import callback as oauth
from qonic_proxy.oauth import pkce
from qonic_proxy.oauth.callback import LoginAttempt
from qonic_proxy.oauth.tokenset import TokenSet
from tests.oauth.support import (
    ACCESS,
    CODE,
    REFRESH,
    SECRET,
    FakeEndpoint,
    Page,
    Recorded,
    Reply,
    abrowse,
    assert_safe_page,
    callback_cfg,
    free_port,
    has_ipv6_loopback,
    json_body,
    make_cfg,
    refused,
    run,
    state_of,
    token_reply,
)


def test_login_attempt_full_flow(endpoint: FakeEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint.set_json(200, token_reply(refresh_token=REFRESH))
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[TokenSet, Page, str]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        query = urllib.parse.urlencode({"code": CODE, "state": state_of(attempt.authorize_url)})
        page = await abrowse(port, f"/callback?{query}")
        return await waiter, page, attempt.authorize_url

    tokens, page, url = run(scenario())
    assert tokens.access_token == ACCESS and tokens.refresh_token == REFRESH
    assert page.status == 200 and "Logged in to Qonic. You can close this tab." in page.body
    assert CODE not in page.body
    assert_safe_page(page)
    [request] = endpoint.requests
    form = request.form
    assert form["code"] == [CODE]
    assert form["redirect_uri"] == [f"http://127.0.0.1:{port}/callback"]
    challenge = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["code_challenge"][0]
    assert pkce.code_challenge_s256(form["code_verifier"][0]) == challenge
    assert refused(port)  # the listener is gone
    for secret in (CODE, form["code_verifier"][0], ACCESS, REFRESH, SECRET):
        assert secret not in caplog.text


def test_wrong_state_and_malformed_requests_keep_waiting(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[list[Page], Page, TokenSet]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        state = state_of(attempt.authorize_url)
        bad = [
            await abrowse(port, "/callback?code=x&state=wrong"),
            await abrowse(port, f"/callback?code=x&state={state[:-1]}"),
            await abrowse(port, f"/callback?code=x&state={state}&state={state}"),
            await abrowse(port, f"/callback?code=x&code=y&state={state}"),
            await abrowse(port, f"/callback?code=x&error=e&state={state}"),
            await abrowse(port, f"/callback?state={state}"),
            await abrowse(port, f"/callback?code=&state={state}"),
            await abrowse(port, "/callback?code=x"),
            await abrowse(port, "/callback"),
            await abrowse(port, f"/callback?code=x&state={state}&junk"),
            await abrowse(port, f"/callback?code=%ff&state={state}"),
            await abrowse(
                port, f"/callback?state={state}&error=a&error_description=1&error_description=2"
            ),
        ]
        assert not waiter.done()
        good = await abrowse(port, f"/callback?code={CODE}&state={state}&scope=projects%3Aread")
        return bad, good, await waiter

    bad, good, tokens = run(scenario())
    assert [page.status for page in bad] == [400] * len(bad)
    for page in bad:
        assert_safe_page(page)
        assert "still waiting" in page.body
    assert good.status == 200 and tokens.access_token == ACCESS
    assert len(endpoint.requests) == 1


def test_wrong_path_and_method_keep_waiting(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[Page, Page, Page, Page, TokenSet]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        state = state_of(attempt.authorize_url)
        wrong_path = await abrowse(port, f"/callbackX?code=x&state={state}")
        root = await abrowse(port, "/")
        post = await abrowse(port, f"/callback?code=x&state={state}", method="POST")
        head = await abrowse(port, f"/callback?code=x&state={state}", method="HEAD")
        assert not waiter.done()
        await abrowse(port, f"/callback?code={CODE}&state={state}")
        return wrong_path, root, post, head, await waiter

    wrong_path, root, post, head, tokens = run(scenario())
    assert wrong_path.status == 404 and root.status == 404
    assert post.status == 405 and post.headers["allow"] == "GET"
    assert head.status == 405
    assert_safe_page(wrong_path)
    assert tokens.access_token == ACCESS


def test_error_callback_is_escaped_and_ends_the_login(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port)
    evil = "<script>alert('x')</script> & more"

    async def scenario() -> tuple[Page, LoginError]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        query = urllib.parse.urlencode(
            {
                "error": "access_denied",
                "error_description": evil,
                "state": state_of(attempt.authorize_url),
            }
        )
        page = await abrowse(port, f"/callback?{query}")
        with pytest.raises(LoginError) as info:
            await waiter
        return page, info.value

    page, error = run(scenario())
    assert "<script>" not in page.body
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page.body
    assert "access_denied" in page.body
    assert_safe_page(page)
    assert str(error).startswith("Qonic refused the login: access_denied: <script>")
    assert "qonic-proxy login" in str(error)
    assert endpoint.requests == []
    assert refused(port)


def test_wait_times_out_and_closes(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> LoginError:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        assert not refused(port)
        with pytest.raises(LoginError) as info:
            await attempt.wait(0.2)
        return info.value

    error = run(scenario())
    assert str(error) == "no login completed within 0.2 s; run `qonic-proxy login` to try again"
    assert refused(port)


def test_default_timeout_comes_from_config(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port, login_timeout=0.25)

    async def scenario() -> LoginError:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        with pytest.raises(LoginError) as info:
            await attempt.wait()
        return info.value

    assert "within 0.25 s" in str(run(scenario()))


def test_port_busy(endpoint: FakeEndpoint) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        cfg = callback_cfg(endpoint, port)

        async def scenario() -> LoginError:
            attempt = LoginAttempt(cfg)
            with pytest.raises(LoginError) as info:
                await attempt.start()
            return info.value

        error = run(scenario())
    assert str(error) == (
        f"port {port} for the login callback (redirect_uri http://127.0.0.1:{port}/callback) is "
        "in use; stop the program using it or change [oauth] redirect_uri (it must match the one "
        "registered with Qonic)"
    )


@pytest.mark.parametrize(
    "uri",
    ["https://localhost:8765/cb", "http://example.com:8765/cb", "http://localhost/cb"],
)
def test_unusable_redirect_uri(uri: str) -> None:
    with pytest.raises(LoginError) as info:
        LoginAttempt(make_cfg(redirect_uri=uri))
    assert "[oauth] redirect_uri" in str(info.value)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_localhost_listens_on_both_loopbacks(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    while True:  # the same port must be free on ::1 too
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", port))
            break
        except OSError:
            port = free_port()
    cfg = callback_cfg(endpoint, port, host="localhost")

    async def scenario() -> tuple[Page, TokenSet]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        state = state_of(attempt.authorize_url)
        v4 = await abrowse(port, "/callback?code=x&state=wrong", host="127.0.0.1")
        assert v4.status == 400
        v6 = await abrowse(port, f"/callback?code={CODE}&state={state}", host="::1")
        return v6, await waiter

    page, tokens = run(scenario())
    assert page.status == 200 and tokens.access_token == ACCESS
    assert refused(port, "127.0.0.1") and refused(port, "::1")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_literal_redirect_binds_only_ipv6(endpoint: FakeEndpoint) -> None:
    port = free_port("::1")
    cfg = callback_cfg(endpoint, port, host="[::1]")

    async def scenario() -> tuple[bool, bool]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        try:
            return refused(port, "::1"), refused(port, "127.0.0.1")
        finally:
            await attempt.close()

    assert run(scenario()) == (False, True)


def test_oversized_and_silent_connections_do_not_block(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    def huge_request() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /callback HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n")
            return sock.recv(100)

    async def scenario() -> tuple[bytes, TokenSet, float]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)  # a browser preconnect
        try:
            answer = await asyncio.to_thread(huge_request)
            state = state_of(attempt.authorize_url)
            await abrowse(port, f"/callback?code={CODE}&state={state}")
            started = time.monotonic()
            tokens = await waiter
            return answer, tokens, time.monotonic() - started
        finally:
            silent.close()

    answer, tokens, took = run(scenario())
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert tokens.access_token == ACCESS
    assert took < 3  # the silent connection was dropped, not waited for


def test_failed_exchange_shows_in_the_browser_and_raises(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(400, {"error": "invalid_grant", "error_description": "code expired"})
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[Page, TokenEndpointError]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        page = await abrowse(port, f"/callback?code={CODE}&state={state_of(attempt.authorize_url)}")
        with pytest.raises(TokenEndpointError) as info:
            await waiter
        return page, info.value

    page, error = run(scenario())
    assert "invalid_grant: code expired" in str(error)
    assert "Login failed" in page.body and "code expired" in page.body
    assert page.status == 502  # a failed login is no 200 page
    assert CODE not in page.body
    assert refused(port)


def test_close_without_callback_ends_a_waiter(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> LoginError:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        await asyncio.sleep(0)  # let the waiter start waiting
        await attempt.close()
        with pytest.raises(LoginError) as info:
            await waiter
        return info.value

    assert "cancelled" in str(run(scenario()))
    assert refused(port)


def test_login_attempt_repr_and_errors_hide_secrets(endpoint: FakeEndpoint) -> None:
    attempt = LoginAttempt(callback_cfg(endpoint, free_port()))
    assert attempt._verifier not in repr(attempt)  # noqa: SLF001
    assert SECRET not in attempt.authorize_url
    assert isinstance(LoginError("x"), QonicProxyError)


def test_connection_limit(endpoint: FakeEndpoint) -> None:
    """A flood of idle connections is capped; the extra ones are dropped at once."""
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> bytes:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        idle = [
            socket.create_connection(("127.0.0.1", port), timeout=5)
            for _ in range(oauth.MAX_CONNECTIONS)
        ]
        try:
            deadline = time.monotonic() + 5
            while len(attempt._tasks) < oauth.MAX_CONNECTIONS and time.monotonic() < deadline:  # noqa: SLF001
                await asyncio.sleep(0.01)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                extra.sendall(b"GET /callback HTTP/1.1\r\n\r\n")
                try:
                    return await asyncio.to_thread(extra.recv, 100)
                except ConnectionResetError:
                    return b""
        finally:
            for sock in idle:
                sock.close()
            await attempt.close()

    assert run(scenario()) == b""


def test_second_callback_during_exchange_gets_410(endpoint: FakeEndpoint) -> None:
    """Once a valid code arrived, nothing else is accepted, even a replay of the same URL."""
    exchanging = threading.Event()
    release = threading.Event()

    def slow_reply(request: Recorded) -> Reply:
        exchanging.set()
        release.wait(10)
        return 200, {"Content-Type": "application/json"}, json_body(token_reply())

    endpoint.reply = slow_reply
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[Page, Page, TokenSet]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        target = f"/callback?code={CODE}&state={state_of(attempt.authorize_url)}"
        first = asyncio.create_task(abrowse(port, target))
        try:
            assert await asyncio.to_thread(exchanging.wait, 10)
            replay = await abrowse(port, target)
        finally:
            release.set()
        return await first, replay, await waiter

    first, replay, tokens = run(scenario())
    assert first.status == 200 and tokens.access_token == ACCESS
    assert replay.status == 410 and "already" in replay.body
    assert_safe_page(replay)
    assert len(endpoint.requests) == 1


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if data:
            sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_silent_connection_gets_408_after_the_read_timeout(
    endpoint: FakeEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oauth, "READ_TIMEOUT", 0.3)
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[bytes, float, bool]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        try:
            started = time.monotonic()
            answer = await asyncio.to_thread(raw_exchange, port, b"")
            return answer, time.monotonic() - started, not attempt._result.done()  # noqa: SLF001
        finally:
            await attempt.close()

    answer, took, still_waiting = run(scenario())
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"No request was received." in answer
    assert 0.2 < took < 5 and still_waiting


def test_h11_answers_with_standard_reasons_and_checks_the_head(endpoint: FakeEndpoint) -> None:
    """Reason phrases come from http.HTTPStatus; a complete head over MAX_HEAD is still 431."""
    port = free_port()
    cfg = callback_cfg(endpoint, port)
    host = b"Host: 127.0.0.1\r\n"

    async def scenario() -> list[bytes]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        try:
            state = state_of(attempt.authorize_url).encode()
            requests = [
                b"GET /nowhere HTTP/1.1\r\n" + host + b"\r\n",
                b"POST /callback HTTP/1.1\r\n" + host + b"Content-Length: 0\r\n\r\n",
                b"GET /callback?code=x&state=" + state + b" HTTP/2.0\r\n" + host + b"\r\n",
                b"GET /callback HTTP/1.1\r\n" + host + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n",
                b"GET /callback?code=x&state=" + state + b" HTTP/1.1\r\n\r\n",  # no Host
                b"HEAD /callback HTTP/1.1\r\n" + host + b"\r\n",
            ]
            answers = [await asyncio.to_thread(raw_exchange, port, r) for r in requests]
            assert not attempt._result.done()  # noqa: SLF001
            return answers
        finally:
            await attempt.close()

    answers = run(scenario())
    lines = [answer.split(b"\r\n", 1)[0] for answer in answers]
    assert lines == [
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 405 Method Not Allowed",
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 431 Request Header Fields Too Large",
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 405 Method Not Allowed",
    ]
    assert b"\r\nAllow: GET\r\n" in answers[1]
    head, _, body = answers[5].partition(b"\r\n\r\n")
    assert body == b"" and b"Content-Length: " in head  # HEAD: the headers only
