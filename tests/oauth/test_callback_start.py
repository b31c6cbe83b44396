"""The login's start URL: the browser we start is sent there instead of the authorize URL, so
no `state` or `code_challenge` is ever in a process's argv (issue 11, point 2)."""

from __future__ import annotations

import asyncio
import logging
import sys
import urllib.parse

import pytest

from qonic_proxy.access.policy import Peer
from qonic_proxy.oauth import callback
from qonic_proxy.oauth.callback import LoginAttempt, may_start
from tests.oauth.support import (
    CODE,
    FakeEndpoint,
    Page,
    abrowse,
    assert_safe_page,
    callback_cfg,
    free_port,
    run,
    state_of,
    token_reply,
)


def test_start_url_redirects_our_account_to_the_authorize_url(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[LoginAttempt, list[Page], Page]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        path = urllib.parse.urlsplit(attempt.start_url).path
        pages = [await abrowse(port, path), await abrowse(port, path + "?x=1"),
                 await abrowse(port, path, "HEAD"), await abrowse(port, path, "POST"),
                 await abrowse(port, path[:-1])]  # one character short: not the start URL
        location = pages[0].headers["location"]
        query = urllib.parse.urlencode({"code": CODE, "state": state_of(location)})
        await abrowse(port, f"/callback?{query}")
        await waiter
        return attempt, pages, pages[0]

    attempt, (get, with_query, head, post, wrong), _ = run(scenario())
    start = attempt.start_url
    assert start.startswith(f"http://127.0.0.1:{port}{callback.START_PREFIX}")
    assert len(start) > len(f"http://127.0.0.1:{port}{callback.START_PREFIX}") + 30  # unguessable
    for word in ("state", "challenge", "code", "client"):
        assert word not in start
    assert get.status == 302 and get.headers["location"] == attempt.authorize_url
    assert_safe_page(get)
    assert with_query.status == 302 and head.status == 302 and head.body == ""
    assert post.status == 405 and post.headers["allow"] == "GET"
    assert wrong.status != 302 and "location" not in wrong.headers
    assert LoginAttempt(cfg).start_url != start  # per login


def test_start_url_is_gone_when_the_login_is(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> Page:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        attempt.submit(f"http://127.0.0.1:{port}/callback?code={CODE}&state="
                       + state_of(attempt.authorize_url))  # the login has its code now
        try:
            return await abrowse(port, urllib.parse.urlsplit(attempt.start_url).path)
        finally:
            await attempt.close()

    assert run(scenario()).status == 410


def test_only_our_account_and_root_may_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callback.os, "getuid", lambda: 1234)
    assert may_start(Peer(1234)) and may_start(Peer(0))
    assert not may_start(Peer(1235)) and not may_start(Peer(65534))
    monkeypatch.setattr(sys, "platform", "linux")
    assert not may_start(Peer(None))  # on Linux an unidentified peer is not the owner
    monkeypatch.setattr(sys, "platform", "darwin")
    assert may_start(Peer(None))  # no peer identity there: the unguessable path is the guard


def test_another_account_gets_a_403_and_no_location(
        endpoint: FakeEndpoint, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The start page asks `may_start`; as another account (here: may_start says no)."""
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(callback, "may_start", lambda peer: False)
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[Page, LoginAttempt]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        try:
            return await abrowse(port, urllib.parse.urlsplit(attempt.start_url).path), attempt
        finally:
            await attempt.close()

    page, attempt = run(scenario())
    assert page.status == 403 and "location" not in page.headers
    assert "another local account" in page.body
    assert state_of(attempt.authorize_url) not in page.body
    assert_safe_page(page)
    assert "login start page: refused the local account" in caplog.text
