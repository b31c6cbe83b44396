"""End to end: the browser we start sees neither `state`, `code_challenge` nor a secret, and
another local account that reads its argv cannot take the login over (issue 11, point 2)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.access.accounts import Account
from tests.harness import DaemonProcess, World, wait_for

pytestmark = pytest.mark.e2e
LEAKS = ("state=", "code_challenge", "code_verifier")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_clean(world: World, record: dict[str, Any]) -> str:
    """No state, challenge or secret in the browser's or its starter's argv and environment."""
    shown = json.dumps([record["argv"], record["environ"], record["parent"]])
    for leak in (*LEAKS, world.client_secret, "QONIC_CLIENT_SECRET"):
        assert leak not in shown, leak
    assert record["parent"]["argv"], "the browser's starter was not seen"
    [url] = record["argv"][1:]
    assert re.fullmatch(rf"http://127\.0\.0\.1:{world.callback_port}/-/start/[\w-]{{30,}}", url)
    return str(url)


def test_daemon_and_cli_logins_hand_the_browser_no_state_and_no_secret(
        world: World, daemons: list[DaemonProcess]) -> None:
    record = world.tmp / "browser.jsonl"
    result = world.cli("login", env=world.env(BROWSER_RECORD=str(record)))
    assert result.returncode == 0, result.stderr
    assert "state=" in result.stderr  # the authorize URL is still printed for headless use
    world.cache_file.unlink()  # so the daemon logs in by itself
    daemon = world.daemon(env=world.env(BROWSER_RECORD=str(record)))
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    cli, run = records(record)
    assert assert_clean(world, cli) != assert_clean(world, run)  # one start URL per login
    assert world.sandbox.stats()["token"]["authorization_code"] == {"ok": 2, "error": 0}


def test_another_account_reading_the_browser_argv_cannot_take_the_login(
        world: World, daemons: list[DaemonProcess], accounts: list[Account]) -> None:
    stranger, allowed, _ = accounts
    record, hold = world.tmp / "browser.jsonl", world.tmp / "go-on"
    world.config["access"] = {"users": [allowed.name]}
    daemon = world.daemon(env=world.env(BROWSER_RECORD=str(record), BROWSER_HOLD=str(hold)))
    daemons.append(daemon)
    daemon.wait_ready()
    [pending] = wait_for(lambda: records(record), 30, "the browser to start")
    start_url = assert_clean(world, pending)
    for pid in (pending["pid"], pending["ppid"]):  # what every account can read in /proc
        seen = subprocess.run(["runuser", "-u", stranger.name, "--", "cat",
                               f"/proc/{pid}/cmdline"], capture_output=True, timeout=30)
        assert seen.returncode == 0, seen.stderr
        assert not any(leak.encode() in seen.stdout for leak in LEAKS)
    assert start_url.encode() in subprocess.run(
        ["runuser", "-u", stranger.name, "--", "cat", f"/proc/{pending['pid']}/cmdline"],
        capture_output=True, timeout=30).stdout.replace(b"\0", b" ")
    # a refused account is cut off before its request is read
    attack = stranger.curl("-i", start_url)
    assert attack.returncode in (52, 56) and "HTTP/" not in attack.stdout, attack
    # an account allowed to use the proxy is still not the one that started this login
    answer = allowed.curl("-i", start_url)
    assert answer.returncode == 0 and answer.stdout.startswith("HTTP/1.1 403"), answer
    assert "location:" not in answer.stdout.lower() and "state=" not in answer.stdout
    assert f"refused the local account {allowed.name}" in daemon.stderr_text()
    code, _ = daemon.health()
    assert code == 503  # nobody finished the login
    hold.touch()  # the owner's browser goes on
    daemon.wait_logged_in(timeout=60)
    assert world.sandbox.stats()["token"]["authorization_code"] == {"ok": 1, "error": 0}
