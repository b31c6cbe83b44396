"""Issue 10 in the token service: an outage or a full disk never costs the login.

Driven like test_service.py (fake clock for wall and monotonic time, a fake token endpoint,
jitter fixed at its top), so every wait is exact and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.outage import OUTAGE_ACTION, failure_facts, whole_seconds
from qonic_proxy.tokens.store import TokenStore
from tests.tokens import test_service
from tests.tokens.test_service import NOW, Rig, hold, run, token

rig = test_service.rig  # the same fixture: fake clock, fake token endpoint, no browser

UNAVAILABLE = TokenEndpointError("the token endpoint at https://q/t refused the request "
                                 "(HTTP 503, no error description); try again later",
                                 status=503, error_code="http_error")


class FullDisk:
    """Makes the rig's store fail to write (ENOSPC) the next `times` saves and reservations."""

    def __init__(self, store: TokenStore, monkeypatch: pytest.MonkeyPatch, times: int) -> None:
        self.left = times
        self.saves = 0
        real_save, real_reserve = store.save, store.reserve

        def save(tokens: TokenSet, reservation: Any = None) -> None:
            if self.left > 0:
                self.left -= 1
                if reservation is not None:
                    reservation.abandon()
                raise store._write_error(OSError(errno.ENOSPC, "No space left on device"))
            self.saves += 1
            real_save(tokens, reservation)

        def reserve() -> Any:
            if self.left > 0:
                raise store._write_error(OSError(errno.ENOSPC, "No space left on device"))
            return real_reserve()

        monkeypatch.setattr(store, "save", save)
        monkeypatch.setattr(store, "reserve", reserve)


# ----- classification ------------------------------------------------------------------------
@pytest.mark.parametrize(("error", "transient", "reason"), [
    (TokenEndpointError("x", status=503), True, "http_503"),
    (TokenEndpointError("x", status=500, error_code="server_error"), True, "http_500"),
    (TokenEndpointError("x", status=429), True, "http_429"),
    (TokenEndpointError("x", status=400, error_code="temporarily_unavailable"), True, "http_400"),
    (TokenEndpointError("x", error_code="timeout"), True, "timeout"),
    (TokenEndpointError("x", error_code="connection_refused"), True, "connection_refused"),
    (TokenEndpointError("x", error_code="dns"), True, "dns"),
    (TokenEndpointError("x", error_code="network"), True, "network"),
    (TokenEndpointError("x", error_code="tls"), True, "tls"),
    (TokenEndpointError("x", error_code="tls_verify"), True, "tls_verify"),
    (TokenEndpointError("x", status=400, error_code="invalid_grant"), False, "http_400"),
    (TokenEndpointError("x", status=401, error_code="invalid_client"), False, "http_401"),
    (TokenEndpointError("x", status=302, error_code="redirect"), False, "http_302"),
    (TokenEndpointError("x", error_code="config"), False, "config"),
    (TimeoutError(), True, "timeout"),
])
def test_failures_are_classified(error: Exception, transient: bool, reason: str):
    facts = failure_facts(error)
    assert facts[0] is transient and facts[2] == reason


def test_whole_seconds_are_at_least_one():
    assert [whole_seconds(s) for s in (0, 0.2, 1, 1.01, 29.5)] == [1, 1, 1, 2, 30]


# ----- an outage -----------------------------------------------------------------------------
def test_a_503_then_recovery_keeps_the_grant_and_opens_no_login(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601  # expired
    rig.endpoint.error = UNAVAILABLE
    assert run(rig.service.get_access_token) is None
    assert rig.service.tokens is not None and rig.service.tokens.refresh_token == "r0"
    assert rig.offers == []
    outage = rig.service.unavailable()
    assert outage is not None and outage.reason == "http_503" and outage.failures == 1
    assert outage.since == NOW + 601 and outage.next_attempt_at == NOW + 602
    health = rig.service.health()
    assert health["status"] == "token_endpoint_unavailable" and health["logged_in"] is False
    assert health["last_error"] == str(UNAVAILABLE) and health["next_attempt_in"] == 1
    assert health["action"] == OUTAGE_ACTION
    assert rig.metrics.refresh_failures.get("http_503") == 1
    assert 'qonic_proxy_token_refresh_failures_total{reason="http_503"} 1' in rig.metrics.render()
    for _ in range(5):  # requests before the next attempt make no token request
        assert run(rig.service.get_access_token) is None
    assert rig.endpoint.calls == ["r0"]
    rig.clock.now += 1
    assert run(rig.service.get_access_token) is None  # second failure: 2 s back-off
    assert rig.service.outage.failures == 2 and rig.service.outage.since == NOW + 601
    assert rig.service.next_attempt_in() == 2
    rig.clock.now += 2
    rig.endpoint.error = None
    assert run(rig.service.get_access_token) == "a3"
    assert rig.endpoint.calls == ["r0", "r0", "r0"]  # the same refresh token: never lost
    assert rig.service.outage is None and rig.offers == []
    assert rig.service.health()["status"] == "ok"


def test_429_with_retry_after_delays_the_next_attempt(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = TokenEndpointError("slow down", status=429, retry_after=30)
    assert run(rig.service.get_access_token) is None
    assert rig.service.next_attempt_in() == 30
    rig.clock.now += 29
    assert run(rig.service.get_access_token) is None
    assert len(rig.endpoint.calls) == 1
    rig.clock.now += 1
    rig.endpoint.error = None
    assert run(rig.service.get_access_token) == "a2"


def test_a_retry_after_beyond_five_minutes_is_capped(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = TokenEndpointError("later", status=503, retry_after=86400)
    run(rig.service.get_access_token)
    assert rig.service.next_attempt_in() == 300


def test_with_a_valid_token_requests_are_served_without_a_token_request(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 545  # due, valid 55 s more
    rig.endpoint.error = UNAVAILABLE
    assert run(rig.service.get_access_token) == "a0"
    rig.clock.now += 0.5
    assert [run(rig.service.get_access_token) for _ in range(5)] == ["a0"] * 5
    assert len(rig.endpoint.calls) == 1
    assert rig.service.unavailable() is None and rig.service.outage is not None
    health = rig.service.health()
    assert health["status"] == "ok" and health["logged_in"] is True
    assert health["refresh_failing"] == {"last_error": str(UNAVAILABLE), "next_attempt_in": 1}


def test_invalid_grant_after_an_outage_still_leads_to_a_login(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = UNAVAILABLE
    run(rig.service.get_access_token)
    rig.clock.now += 1
    rig.endpoint.error = TokenEndpointError("gone", status=400, error_code="invalid_grant")
    assert run(rig.service.get_access_token) is None
    assert rig.service.tokens is None and rig.offers == [1] and rig.service.outage is None
    assert rig.service.health()["status"] == "login_required"


def test_a_401_during_an_outage_keeps_the_login_and_the_token(rig: Rig):
    hold(rig, token("a0"))
    rig.endpoint.error = TokenEndpointError("down", error_code="connection_refused")

    async def rejected() -> str | None:
        return await rig.service.refresh("a0", force=True)

    assert run(rejected) is None
    assert rig.service.tokens.access_token == "a0" and rig.offers == []
    assert run(rig.service.get_access_token) is None  # Qonic said 401 to it: not sent again
    assert rig.service.unavailable().reason == "connection_refused"
    assert run(rejected) is None and len(rig.endpoint.calls) == 1  # backing off, still no login
    rig.clock.now += 1
    rig.endpoint.error = None
    assert run(rig.service.get_access_token) == "a2"


def test_a_timed_out_refresh_is_an_outage(rig: Rig, monkeypatch: pytest.MonkeyPatch):
    from qonic_proxy.tokens import service as tokens_module
    monkeypatch.setattr(tokens_module, "REFRESH_TIMEOUT", 0.1)
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.delay = 0.3
    assert run(rig.service.get_access_token) is None
    assert rig.service.unavailable().reason == "timeout" and rig.offers == []


def test_no_login_is_offered_during_an_outage(rig: Rig, monkeypatch: pytest.MonkeyPatch):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = UNAVAILABLE
    run(rig.service.get_access_token)
    monkeypatch.undo()  # the real offer_login
    started: list[int] = []
    monkeypatch.setattr(rig.service, "start_login", lambda: started.append(1))

    async def offer() -> None:
        rig.service.offer_login()
        await asyncio.sleep(0)

    run(offer)
    assert started == []


# ----- the cache cannot be written -----------------------------------------------------------
def test_a_failing_save_keeps_the_new_tokens_and_the_next_refresh_spends_the_new_one(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    hold(rig, token("a0"))
    FullDisk(rig.store, monkeypatch, times=1000)
    caplog.set_level(logging.INFO, "qonic_proxy")
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"
    assert rig.store.load().refresh_token == "r0"  # the file still has the spent one
    path = rig.store.path
    assert rig.service.unsaved_error == (f"cannot write the token cache {path} (No space left "
                                         "on device); the newest tokens are only in memory")
    assert rig.service.health()["cache"] == {"path": str(path), "saved": False,
                                             "error": "No space left on device"}
    rig.clock.now += 545
    assert run(rig.service.get_access_token) == "a2"
    assert rig.endpoint.calls == ["r0", "r1"]  # never the file's older refresh token
    warnings = [r for r in caplog.records if "cannot write the token cache" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == (
        f"cannot write the token cache {path} (No space left on device); keeping the new "
        "tokens in memory and retrying the save every 5 s")
    assert rig.service.shutdown_warning() == (
        f"stopping with the newest tokens unsaved (cannot write {path}: No space left on "
        "device); the next start will need a browser login unless the cache is written first")
    assert "a2" not in repr(rig.service.health()) and "r2" not in rig.service.unsaved_error


def test_the_save_is_retried_until_space_is_back(rig: Rig, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture):
    hold(rig, token("a0"))
    disk = FullDisk(rig.store, monkeypatch, times=3)  # the refresh's save, then two retries
    caplog.set_level(logging.INFO, "qonic_proxy")
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"
    run(rig.service.retry_save)
    run(rig.service.retry_save)
    assert rig.service.unsaved_error is not None and disk.saves == 0
    run(rig.service.retry_save)
    assert rig.service.unsaved_error is None and rig.service.shutdown_warning() is None
    assert rig.store.load().refresh_token == "r1"
    assert rig.service.health()["cache"]["saved"] is True
    assert any(r.getMessage() == f"saved the token cache {rig.store.path} again"
               for r in caplog.records)
    run(rig.service.retry_save)
    assert disk.saves == 1  # nothing left to save


def test_a_refresh_saves_what_was_unsaved_first(rig: Rig, monkeypatch: pytest.MonkeyPatch):
    hold(rig, token("a0"))
    disk = FullDisk(rig.store, monkeypatch, times=1)
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"
    rig.clock.now += 545
    assert run(rig.service.get_access_token) == "a2"
    assert disk.saves == 2 and rig.store.load().refresh_token == "r2"
    assert rig.service.unsaved_error is None


def test_the_refresh_goes_ahead_when_the_reservation_fails(rig: Rig,
                                                         monkeypatch: pytest.MonkeyPatch):
    hold(rig, token("a0"))

    def reserve() -> Any:
        raise rig.store._write_error(OSError(errno.EROFS, "Read-only file system"))

    monkeypatch.setattr(rig.store, "reserve", reserve)
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"
    assert rig.store.load().refresh_token == "r1"  # the plain save worked


def test_adopting_from_the_store_never_moves_backwards(rig: Rig,
                                                       monkeypatch: pytest.MonkeyPatch):
    hold(rig, token("a0"))
    FullDisk(rig.store, monkeypatch, times=1000)
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"  # held in memory only
    assert rig.service.load_from_store()  # SIGHUP: the file is older
    assert rig.service.tokens.access_token == "a1" and rig.service.unsaved_error is not None
    monkeypatch.undo()
    rig.store.save(token("newer-login", "r-login", at=NOW + 600))
    assert rig.service.load_from_store()
    assert rig.service.tokens.access_token == "newer-login"
    assert rig.service.unsaved_error is None


def test_an_older_file_read_under_the_lock_is_not_the_base(rig: Rig):
    hold(rig, token("a0", "r-new", at=NOW))
    rig.store.save(token("old", "r-old", at=NOW - 100))  # e.g. a stale copy put back
    rig.clock.now = NOW + 545
    assert run(rig.service.get_access_token) == "a1"
    assert rig.endpoint.calls == ["r-new"]


def test_health_says_why_the_cache_is_unsaved(rig: Rig):
    rig.service._unsaved.hold(token("login"), rig.store._write_error(
        OSError(errno.EACCES, "Permission denied")))
    assert rig.service.health()["cache"]["error"] == "Permission denied"
