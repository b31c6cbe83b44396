"""The daemon's own lifecycle decisions in-process: STATUS= text, the refresh-ahead loop's
waits, the background save retry and the shutdown line (no mitmproxy started)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import pytest

from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.proxy import daemon as daemon_module
from qonic_proxy.proxy.daemon import Daemon
from qonic_proxy.sdnotify import Notifier
from tests.tokens import test_service
from tests.tokens.test_outage import FullDisk
from tests.tokens.test_service import NOW, Rig, hold, run, token

rig = test_service.rig


def daemon_for(rig: Rig) -> Daemon:
    daemon = Daemon(rig.service.cfg, open_browser=None, notifier=Notifier(None),
                    announce_ready=lambda line: None)
    daemon.tokens = rig.service
    return daemon


def run_loop(loop: Callable[[], Awaitable[None]], monkeypatch: pytest.MonkeyPatch,
             each_sleep: Callable[[float], bool]) -> list[float]:
    """Run a daemon loop whose sleeps return at once; stop once `each_sleep(seconds)` says so."""
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        stop = each_sleep(seconds)
        await real_sleep(0)
        if stop:
            raise asyncio.CancelledError

    monkeypatch.setattr(daemon_module.asyncio, "sleep", sleep)

    async def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await loop()

    run(main)
    return sleeps


def test_status_text_in_an_outage(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = TokenEndpointError("down", status=503, retry_after=20)
    run(rig.service.get_access_token)
    assert daemon_for(rig).status_text() == (
        "Qonic's token endpoint is unavailable (HTTP 503); retrying in 20 s")


def test_the_refresh_ahead_loop_wakes_at_the_next_attempt(rig: Rig,
                                                          monkeypatch: pytest.MonkeyPatch):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = TokenEndpointError("down", status=503, retry_after=4)

    def slept(seconds: float) -> bool:
        rig.clock.now += seconds
        stop = rig.endpoint.error is None  # the second sleep: after the refresh
        rig.endpoint.error = None
        return stop

    sleeps = run_loop(daemon_for(rig)._refresh_ahead, monkeypatch, slept)
    assert sleeps[0] == 4  # the Retry-After, not a fixed 10 s and not at once
    assert rig.endpoint.calls == ["r0", "r0"] and rig.service.tokens.access_token == "a2"


def test_the_save_is_retried_in_the_background_and_shutdown_says_what_is_unsaved(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    hold(rig, token("a0"))
    FullDisk(rig.store, monkeypatch, times=1000)
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"
    caplog.set_level(logging.WARNING, "qonic_proxy")
    daemon = daemon_for(rig)
    run(daemon._warn_unsaved)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopping")]
    assert lines == [
        f"stopping with the newest tokens unsaved (cannot write {rig.store.path}: No space "
        "left on device); the next start will need a browser login unless the cache is "
        "written first"]


def test_the_last_save_at_shutdown_writes_when_it_can(rig: Rig, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture):
    hold(rig, token("a0"))
    FullDisk(rig.store, monkeypatch, times=1)
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"
    caplog.set_level(logging.WARNING, "qonic_proxy")
    run(daemon_for(rig)._warn_unsaved)
    assert rig.store.load().access_token == "a1"
    assert not [r for r in caplog.records if r.getMessage().startswith("stopping")]


def test_save_retry_task_runs_every_five_seconds(rig: Rig, monkeypatch: pytest.MonkeyPatch):
    hold(rig, token("a0"))
    FullDisk(rig.store, monkeypatch, times=2)
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"
    waits = run_loop(daemon_for(rig)._save_retry, monkeypatch,
                     lambda seconds: rig.service.unsaved_error is None)
    assert waits[:2] == [5.0, 5.0] and rig.store.load().access_token == "a1"
