"""Token-endpoint fault switches as pure state: windows, counts, validation (no socket)."""

from __future__ import annotations

import threading
import time

import pytest

from qonic_proxy.sandbox.faults import Faults, TokenFault, token_fault_from


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_fault_lasts_its_seconds_and_counts_the_requests_it_got() -> None:
    clock = Clock()
    faults = Faults(clock)
    assert faults.on_token_request() is None
    fault = TokenFault("status", 20, status=429, retry_after=7)
    faults.set_token_fault(fault)
    assert faults.on_token_request() is fault
    clock.now += 19.9
    assert faults.on_token_request() is fault
    snap = faults.snapshot()["token"]
    assert snap["requests"] == 2 and snap["active"]["status"] == 429
    assert snap["remaining"] == pytest.approx(0.1)
    clock.now += 0.1
    assert faults.on_token_request() is None  # back to normal, not counted
    assert faults.snapshot()["token"] == {"active": None, "remaining": 0.0, "requests": 2}


def test_a_new_fault_replaces_the_old_and_clear_switches_off() -> None:
    faults = Faults(Clock())
    faults.set_token_fault(TokenFault("reset", 5))
    faults.on_token_request()
    faults.set_token_fault(TokenFault("hang", 5, hang=1))
    assert faults.snapshot()["token"]["requests"] == 0
    assert faults.on_token_request() == TokenFault("hang", 5, hang=1)
    faults.clear_token_fault()
    assert faults.on_token_request() is None
    assert faults.snapshot()["token"]["requests"] == 1


def test_release_ends_a_hold_at_once() -> None:
    faults = Faults()
    threading.Timer(0.1, faults.release).start()
    started = time.monotonic()
    faults.hold(30)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("data, fragment", [
    ({"mode": "status"}, "required"),
    ({"mode": "boom", "seconds": 1}, "mode must be"),
    ({"mode": "status", "seconds": 0}, "seconds must be"),
    ({"mode": "status", "seconds": "5"}, "seconds must be"),
    ({"mode": "status", "seconds": 5, "status": 404}, "429 or 5xx"),
    ({"mode": "status", "seconds": 5, "status": 503.0}, "integer"),
    ({"mode": "status", "seconds": 5, "retry_after": -1}, "retry_after"),
    ({"mode": "hang", "seconds": 5, "hang": 0}, "hang must be"),
    ({"mode": "reset", "seconds": 5, "extra": 1}, "unknown key 'extra'"),
    ({"mode": 5, "seconds": 5}, "mode must be a string"),
])
def test_bad_fault_specs_are_one_sentence(data: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        token_fault_from(data)


def test_a_good_spec() -> None:
    assert token_fault_from({"mode": "status", "seconds": 20, "status": 429, "retry_after": 3}) \
        == TokenFault("status", 20.0, status=429, retry_after=3)
    assert token_fault_from({"mode": "hang", "seconds": 2, "hang": 40}).hang == 40.0
