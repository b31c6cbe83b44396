"""TokenService timing and single-flight logic, with a fake clock and a fake token endpoint.

The end-to-end tests (test_lifecycle.py) prove the same behaviour through the real daemon; these
pin the fiddly decisions (when is a token due, who waits for whom, what a failure means) quickly
and exactly, without waiting for a real clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.metrics import Metrics
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.records import replace
from qonic_proxy.tokens import service as tokens_module
from qonic_proxy.tokens import timing
from qonic_proxy.tokens.service import TokenService, refresh_due_at
from qonic_proxy.tokens.store import TokenStore, cache_key
from tests.tokens.test_store import make_cfg

NOW = 1_800_000_000.0
MARGIN = 60


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def token(access: str, refresh: str | None = "r0", *, life: float = 600, at: float = NOW,
          ) -> TokenSet:
    return TokenSet(access_token=access, refresh_token=refresh, expires_at=at + life,
                    scopes=("projects:read",), token_type="Bearer", obtained_at=at)


class Endpoint:
    """Stands in for oauth.refresh_tokens: counts calls, rotates, can be slow or fail."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[str] = []
        self.delay = 0.0
        self.error: Exception | None = None
        self.lock = threading.Lock()

    def __call__(self, cfg: Any, refresh_token: str) -> TokenSet:
        with self.lock:
            self.calls.append(refresh_token)
            n = len(self.calls)
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return token(f"a{n}", f"r{n}", at=self.clock.now)


@dataclasses.dataclass
class Rig:
    service: TokenService
    store: TokenStore
    clock: Clock
    endpoint: Endpoint
    metrics: Metrics
    offers: list[int]


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    cfg = replace(make_cfg(), token=replace(
        make_cfg().token, cache_file=tmp_path / "state" / "token.json", refresh_margin=MARGIN))
    store = TokenStore(cfg.token.cache_file, cache_key(cfg))
    clock = Clock()
    endpoint = Endpoint(clock)
    monkeypatch.setattr(tokens_module, "refresh_tokens", endpoint)
    metrics = Metrics(lambda: None)
    service = TokenService(cfg, store, metrics=metrics, clock=clock, monotonic=clock,
                           uniform=lambda low, high: high)  # jitter at its top: exact waits
    offers: list[int] = []

    def offer_login() -> None:  # what the real one does, minus the browser and the port
        offers.append(1)
        service._login_task = asyncio.get_running_loop().create_future()

    monkeypatch.setattr(service, "offer_login", offer_login)
    return Rig(service, store, clock, endpoint, metrics, offers)


def hold(rig: Rig, tokens: TokenSet) -> None:
    rig.store.save(tokens)
    assert rig.service.load_from_store()


def run(coroutine_factory: Callable[[], Any]) -> Any:
    async def main() -> Any:
        return await coroutine_factory()
    return asyncio.run(main())


# ----- when a token is due -------------------------------------------------------------------
def test_due_time_is_the_margin_before_expiry_but_never_before_half_the_lifetime():
    assert refresh_due_at(token("a", life=600), 60) == NOW + 540
    assert refresh_due_at(token("a", life=60), 300) == NOW + 30  # short token: half its life
    assert refresh_due_at(token("a", life=600), 0) == NOW + 600
    assert refresh_due_at(replace(token("a"), expires_at=None), 60) is None
    odd = replace(token("a"), obtained_at=NOW + 900)  # clock skew: plain margin
    assert refresh_due_at(odd, 60) == NOW + 540


def test_a_fresh_token_is_served_without_a_token_request(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 539
    assert run(rig.service.get_access_token) == "a0"
    assert rig.endpoint.calls == []


def test_a_just_refreshed_short_token_is_not_due_again_at_once(rig: Rig):
    hold(rig, token("a0", life=20))  # shorter than the 60 s margin
    rig.clock.now = NOW + 10
    assert run(rig.service.get_access_token) == "a1"
    assert run(rig.service.get_access_token) == "a1"  # the new 600 s token: not due
    assert rig.endpoint.calls == ["r0"]


# ----- single flight -------------------------------------------------------------------------
def test_concurrent_callers_share_one_refresh_and_the_rotation_is_stored(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 545
    rig.endpoint.delay = 0.1

    async def burst() -> list[str | None]:
        return await asyncio.gather(*(rig.service.get_access_token() for _ in range(50)))

    assert run(burst) == ["a1"] * 50
    assert rig.endpoint.calls == ["r0"]
    assert rig.store.load().refresh_token == "r1"  # rotated token on disk at once
    assert rig.metrics.refreshes.get("ok") == 1 and rig.service.refresh_count == 1
    assert rig.service.health()["last_refresh"]["outcome"] == "ok"


def test_a_failed_refresh_is_shared_by_its_waiters_and_backed_off(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 545  # due, still valid for 55 s
    rig.endpoint.delay = 0.1
    rig.endpoint.error = TokenEndpointError("the token endpoint is down", status=503,
                                            error_code="temporarily_unavailable")

    async def burst() -> list[str | None]:
        return await asyncio.gather(*(rig.service.get_access_token() for _ in range(20)))

    assert run(burst) == ["a0"] * 20  # the old token while it lasts
    assert len(rig.endpoint.calls) == 1
    assert run(rig.service.get_access_token) == "a0"
    assert len(rig.endpoint.calls) == 1  # backing off
    rig.service._refresh_backoff.failed_at -= timing.REFRESH_BACKOFF + 1
    rig.endpoint.error = None
    assert run(rig.service.get_access_token) == "a2"
    assert rig.metrics.refreshes.get("error") == 1 and rig.metrics.refreshes.get("ok") == 1


def test_an_expired_token_whose_refresh_fails_gives_none(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    # a definite refusal that is not transient (a 503 is an outage: see test_outage.py)
    rig.endpoint.error = TokenEndpointError("refused", status=400, error_code="invalid_scope")
    assert run(rig.service.get_access_token) is None
    assert rig.service.health()["status"] == "login_required"


def test_waiting_for_a_hung_token_endpoint_is_bounded(rig: Rig, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tokens_module, "REFRESH_TIMEOUT", 0.2)
    hold(rig, token("a0"))
    rig.clock.now = NOW + 545
    rig.endpoint.delay = 0.6
    started = time.monotonic()

    async def ask() -> str | None:
        return await rig.service.get_access_token()

    assert run(ask) == "a0"
    assert time.monotonic() - started < 2  # 0.2 s wait (+ the hung thread at loop shutdown)
    assert "timed out" in rig.service.last_refresh.detail


def test_invalid_grant_drops_the_token_and_offers_a_login(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 545
    rig.endpoint.error = TokenEndpointError("Qonic refused the refresh token", status=400,
                                            error_code="invalid_grant")
    assert run(rig.service.get_access_token) is None
    assert rig.service.tokens is None and rig.offers == [1]
    health = rig.service.health()
    assert health["status"] == "login_required" and "qonic-proxy login" in health["action"]


# ----- 401 from the API (force) --------------------------------------------------------------
def test_a_401_forces_a_refresh_of_a_token_that_looked_fine(rig: Rig):
    hold(rig, token("a0"))

    async def two_requests_rejected() -> list[str | None]:
        return await asyncio.gather(rig.service.refresh("a0", force=True),
                                    rig.service.refresh("a0", force=True))

    assert run(two_requests_rejected) == ["a1", "a1"]
    assert rig.endpoint.calls == ["r0"]


def test_a_401_without_refresh_token_drops_the_token(rig: Rig):
    hold(rig, token("a0", refresh=None))

    async def rejected() -> str | None:
        return await rig.service.refresh("a0", force=True)

    assert run(rejected) is None
    assert rig.service.tokens is None and rig.offers == [1]


# ----- another process shares the cache ------------------------------------------------------
def test_a_siblings_fresh_refresh_on_disk_is_used_without_a_token_request(rig: Rig):
    hold(rig, token("a0", at=NOW - 550))  # due 10 s ago
    rig.store.save(token("sibling", "r-sibling", at=NOW))  # another process refreshed
    assert run(rig.service.get_access_token) == "sibling"
    assert rig.endpoint.calls == []
    assert rig.service.refresh_count == 0 and rig.metrics.refreshes.get("ok") == 0


def test_a_siblings_due_token_is_refreshed_with_its_refresh_token_not_ours(rig: Rig):
    hold(rig, token("a0", "r-old", at=NOW - 560))
    rig.store.save(token("sibling", "r-sibling", at=NOW - 550))  # newer, but also due
    assert run(rig.service.get_access_token) == "a1"
    assert rig.endpoint.calls == ["r-sibling"]  # r-old was spent by the sibling


# ----- no refresh token ----------------------------------------------------------------------
def test_without_refresh_token_a_login_is_offered_once_while_the_token_still_works(rig: Rig):
    hold(rig, token("a0", refresh=None))
    rig.clock.now = NOW + 545

    async def requests() -> list[str | None]:
        return [await rig.service.get_access_token() for _ in range(5)]

    assert run(requests) == ["a0"] * 5
    assert rig.offers == [1] and rig.endpoint.calls == []
    rig.clock.now = NOW + 601
    assert run(rig.service.get_access_token) is None


# ----- the cache file ------------------------------------------------------------------------
def test_watch_store_adopts_a_new_login_and_notices_a_logout(rig: Rig,
                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tokens_module, "STORE_POLL_INTERVAL", 0.01)
    hold(rig, token("a0"))

    async def scenario() -> None:
        watcher = asyncio.get_running_loop().create_task(rig.service.watch_store())
        try:
            rig.store.save(token("from-login-verb", at=NOW + 1))
            await until(lambda: rig.service.tokens.access_token == "from-login-verb")
            rig.store.delete()
            await until(lambda: rig.service.tokens is None)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    run(scenario)
    assert rig.service.health()["status"] == "login_required"


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_health_tells_expiry_and_never_a_token(rig: Rig):
    hold(rig, token("secret-access-value", "secret-refresh-value"))
    rig.clock.now = NOW + 100
    health = rig.service.health()
    assert health["status"] == "ok" and health["expires_in"] == 500
    assert health["refresh_token"] is True and "action" not in health
    assert "secret" not in repr(health)
    assert rig.service.refresh_due_in() == 440
