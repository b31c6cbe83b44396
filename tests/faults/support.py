"""What every fault test checks: the user's view over time, no browser, no refresh-token reuse,
and a restart that serves without a login."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from tests.harness import DaemonProcess, World, http_request, wait_for


@dataclass
class Seen:
    t: float
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def call(daemon: DaemonProcess, path: str = "/v1/projects", started: float = 0.0) -> Seen:
    status, headers, raw = http_request(daemon.reverse_url + path, timeout=60)
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    return Seen(time.monotonic() - started, status, headers, body if isinstance(body, dict)
                else {"list": body})


def error_of(seen: Seen) -> str:
    return str(seen.body.get("error", ""))


def assert_no_login_lost(world: World, daemon: DaemonProcess, browsers: int = 1) -> None:
    """No browser beyond the first login, no refresh token spent twice."""
    assert world.browser_runs() == browsers, "a browser was opened"
    assert world.sandbox.stats()["refresh_token_reused"] == 0, "a refresh token was reused"


def assert_restart_serves(world: World, daemons: list[DaemonProcess], old: DaemonProcess,
                          browsers: int = 1) -> None:
    old.stop()
    again = world.daemon()
    daemons.append(again)
    again.wait_ready()
    wait_for(lambda: again.health()[0] == 200, 15, "the restarted daemon to be logged in")
    assert call(again).status == 200
    assert world.browser_runs() == browsers, "the restart needed a browser login"
    assert world.sandbox.stats()["refresh_token_reused"] == 0


def metric(daemon: DaemonProcess, prefix: str) -> list[str]:
    _, _, raw = http_request(daemon.reverse_url + "/-/metrics")
    return [line for line in raw.decode().splitlines() if line.startswith(prefix)]
