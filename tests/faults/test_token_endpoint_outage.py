"""Issue 10: an outage of Qonic's token endpoint must never cost the login.

The daemon (8 s tokens, refresh 3 s before expiry) is called once a second while the token
endpoint answers 503 (or 429 with Retry-After, never answers, or resets) for 10 s from just after
the login. While the old token lives, requests pass; once it expired they get 503
token_endpoint_unavailable with Retry-After (never 401 login_required) and /-/health says so;
after the fault, service resumes without a login, and the metrics count the failures by reason.
"""

from __future__ import annotations

import time

import pytest

from qonic_proxy.sandbox.faults import TokenFault
from tests.faults.conftest import LIFETIME, MARGIN
from tests.faults.support import (
    Seen,
    assert_no_login_lost,
    assert_restart_serves,
    call,
    error_of,
    metric,
)
from tests.harness import DaemonProcess, World, wait_for

pytestmark = pytest.mark.e2e
FAULT_SECONDS = 10.0

FAULTS = {
    "503": (TokenFault("status", FAULT_SECONDS, status=503), ('reason="http_503"',)),
    "429": (TokenFault("status", FAULT_SECONDS, status=429, retry_after=4),
            ('reason="http_429"',)),
    "hang": (TokenFault("hang", FAULT_SECONDS, hang=60), ('reason="timeout"',)),
    "reset": (TokenFault("reset", FAULT_SECONDS), ('reason="network"',
                                                    'reason="connection_refused"')),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_outage_keeps_the_login(world: World, daemons: list[DaemonProcess], name: str) -> None:
    fault, reasons = FAULTS[name]
    daemon = world.daemon()
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    world.sandbox.set_token_fault(fault)
    started = time.monotonic()
    seen: list[Seen] = []
    health: list[tuple[float, int, dict]] = []
    while time.monotonic() - started < FAULT_SECONDS + 30:
        s = call(daemon, started=started)
        seen.append(s)
        status, body = daemon.health()
        health.append((s.t, status, body))
        if s.t > FAULT_SECONDS and s.status == 200:
            break
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started - s.t)))
    timeline = " ".join(f"{s.t:.0f}s:{s.status}:{error_of(s) or '-'}" for s in seen)
    # Never a login: no 401, no login_required, at any time.
    assert all(s.status in (200, 503) for s in seen), timeline
    assert not any(error_of(s) == "login_required" for s in seen), timeline
    # While the old token lives (refresh due at LIFETIME - MARGIN) requests pass.
    assert all(s.status == 200 for s in seen if s.t < LIFETIME - MARGIN - 0.5), timeline
    # Once it expired, a 503 that says what is happening, with Retry-After.
    outage = [s for s in seen if s.status == 503]
    assert outage, timeline
    for s in outage:
        assert error_of(s) == "token_endpoint_unavailable", timeline
        retry = int(s.headers["Retry-After"])
        assert retry >= 1 and s.body["retry_after"] == retry
        assert "keeps the login and retries in" in s.body["message"]
    bad = [(t, b) for t, st, b in health if st == 503]
    assert bad and all(b["status"] == "token_endpoint_unavailable" and not b["logged_in"]
                       and b["last_error"] and b["next_attempt_in"] >= 0
                       and b["action"].startswith("Nothing to do") for _, b in bad)
    # After the fault, service resumes by itself.
    assert seen[-1].status == 200, timeline
    failures = metric(daemon, "qonic_proxy_token_refresh_failures_total")
    assert any(r in line for line in failures for r in reasons), failures
    assert world.sandbox.stats()["faults"]["token"]["requests"] >= 1
    assert_no_login_lost(world, daemon)
    assert_restart_serves(world, daemons, daemon)


def test_a_valid_token_is_served_during_an_outage(world: World,
                                                  daemons: list[DaemonProcess]) -> None:
    world.sandbox.set_access_token_lifetime(30)
    world.config["token"]["refresh_margin"] = 28  # capped at half the life: due at 15 s of 30
    daemon = world.daemon()
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()  # the login's own code exchange needs the token endpoint
    world.sandbox.set_token_fault(TokenFault("status", 22, status=503))  # ends before expiry
    wait_for(lambda: "refresh_failing" in daemon.health()[1], 20, "a failed refresh")
    assert call(daemon).status == 200
    status, body = daemon.health()
    assert status == 200 and body["status"] == "ok"
    assert body["refresh_failing"]["last_error"] and body["refresh_failing"]["next_attempt_in"] >= 0
    assert body["cache"]["saved"] is True and body["cache"]["error"] is None
    assert_no_login_lost(world, daemon)
