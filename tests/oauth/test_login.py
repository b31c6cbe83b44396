"""login(): the URL is announced, the browser opened off the loop, the callback finishes it."""

from __future__ import annotations

import threading
import time
import urllib.parse

from qonic_proxy.oauth import login as oauth
from tests.oauth.support import (
    ACCESS,
    CODE,
    FakeEndpoint,
    browse,
    callback_cfg,
    free_port,
    refused,
    run,
    state_of,
    token_reply,
)


def test_login_announces_and_opens_browser_off_the_loop(endpoint: FakeEndpoint) -> None:
    """The browser opener blocks (like `webbrowser` with a $BROWSER that waits) and returns
    False; the URL is announced anyway and the login completes through the callback."""
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)
    announced: list[str] = []
    opened: list[str] = []
    release = threading.Event()

    def blocking_browser(url: str) -> bool:
        opened.append(url)
        # the browser starts at our start URL, which sends it on to the authorize URL
        start = browse(port, urllib.parse.urlsplit(url).path)
        assert start.status == 302
        # Qonic would redirect the browser to the callback; do that, then hang like a browser.
        query = urllib.parse.urlencode({"code": CODE, "state": state_of(start.headers["location"])})
        browse(port, f"/callback?{query}")
        release.wait(10)
        return False

    try:
        tokens = run(oauth.login(cfg, open_browser=blocking_browser, announce=announced.append))
    finally:
        release.set()
    assert tokens.access_token == ACCESS
    assert len(announced) == 1 and len(opened) == 1
    assert urllib.parse.urlsplit(announced[0]).path == "/v1/auth/authorize"
    # the browser's argv gets the start URL on our callback: no state, no code_challenge
    assert opened[0].startswith(f"http://127.0.0.1:{port}/-/start/")
    assert "state" not in opened[0] and "challenge" not in opened[0]
    assert refused(port)


def test_login_without_browser_and_failing_browser(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())

    def finish_from_elsewhere(port: int, announced: list[str]) -> None:
        deadline = time.monotonic() + 10
        while not announced and time.monotonic() < deadline:
            time.sleep(0.01)
        browse(port, f"/callback?code={CODE}&state={state_of(announced[0])}")

    def broken_browser(url: str) -> bool:
        raise RuntimeError("no display")

    for opener in (None, broken_browser):
        port = free_port()
        cfg = callback_cfg(endpoint, port)
        announced: list[str] = []
        helper = threading.Thread(target=finish_from_elsewhere, args=(port, announced))
        helper.start()
        try:
            tokens = run(oauth.login(cfg, open_browser=opener, announce=announced.append))
        finally:
            helper.join(10)
        assert tokens.access_token == ACCESS
