"""How `status` words a token's state for people."""

from __future__ import annotations

import time
from typing import Any

from qonic_proxy.cli.status_format import describe_expiry, format_status


def test_describe_expiry() -> None:
    assert describe_expiry(None) == "the token's lifetime is unknown"
    assert describe_expiry(time.time() - 1) == "the token has expired"
    later = describe_expiry(time.time() + 3600)
    assert later.startswith("token valid until ")
    assert later.endswith(" s)")


def test_format_status_logged_in_with_a_daemon() -> None:
    report: dict[str, Any] = {
        "logged_in": True, "cache_file": "/state/token.json", "scopes": ["projects:read"],
        "expires_at": time.time() + 600, "refresh_token": True,
        "daemon": {"pid": 42, "listeners": {"reverse": "http://127.0.0.1:8080", "forward": None}},
    }
    lines = format_status(report).splitlines()
    assert lines[0] == "logged in"
    assert lines[1] == "  token cache:   /state/token.json"
    assert lines[2] == "  scopes:        projects:read"
    assert lines[3].startswith("  expiry:        token valid until ")
    assert lines[4] == "  refresh token: yes"
    assert lines[5] == ("  daemon:        running (pid 42), reverse http://127.0.0.1:8080, "
                        "forward off")


def test_format_status_not_logged_in() -> None:
    report: dict[str, Any] = {"logged_in": False, "action": "run `qonic-proxy login`",
                              "cache_file": "/t.json", "scopes": [], "expires_at": None,
                              "refresh_token": False, "daemon": None}
    assert format_status(report).splitlines() == [
        "NOT logged in: run `qonic-proxy login`",
        "  token cache:   /t.json",
        "  refresh token: no",
        "  daemon:        not reachable",
    ]


def test_format_status_says_when_the_cache_is_not_saved() -> None:
    report: dict[str, Any] = {
        "logged_in": True, "cache_file": "/t.json", "refresh_token": True, "daemon": None,
        "cache": {"path": "/t.json", "saved": False, "error": "Read-only file system"}}
    assert format_status(report).splitlines()[2] == (
        "  cache:         NOT SAVED (Read-only file system)")
