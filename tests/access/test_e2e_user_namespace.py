"""A daemon in a private user namespace (what systemd's PrivateUsers= gives the units) sees
every other local account as one overflow uid: it cannot tell them apart, so it must refuse
them all unless they present the client key (issue 11: only the owner and root by default)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.access.accounts import Account
from tests.harness import DaemonProcess, World, curl, http_request, wait_for

pytestmark = pytest.mark.e2e

PRIVATE_USERS = ["unshare", "--user", "--map-root-user"]  # root stays root; nobody else is mapped


def start(world: World, daemons: list[DaemonProcess], key_file: Path | None = None,
          ) -> DaemonProcess:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to give the daemon a private user namespace")
    probe = subprocess.run([*PRIVATE_USERS, "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"this kernel refuses a new user namespace: {probe.stderr.decode()[:200]}")
    daemon = world.daemon(prefix=PRIVATE_USERS)
    daemons.append(daemon)
    daemon.wait_ready()
    # the scripted browser runs as root, inside: it is mapped
    if key_file is None:
        daemon.wait_logged_in()
    else:
        headers = {"X-Qonic-Proxy-Key": key_file.read_text().strip()}
        wait_for(lambda: http_request(daemon.reverse_url + "/-/health", headers=headers)[0]
                 == 200, 30, "the daemon to be logged in")
    return daemon


def answer(result: subprocess.CompletedProcess[str]) -> tuple[int, dict[str, object]]:
    text, _, code = result.stdout.rpartition("\n")
    return int(code), json.loads(text) if text.startswith("{") else {}


def test_accounts_outside_the_namespace_are_refused_without_the_key(
        world: World, daemons: list[DaemonProcess], accounts: list[Account]) -> None:
    stranger, allowed, _ = accounts
    world.config["access"] = {"users": [allowed.name]}  # cannot be honoured in there
    daemon = start(world, daemons)
    url = daemon.reverse_url + "/v1/projects"
    before = world.sandbox.stats()["authorization_headers_seen"]

    code, _ = answer(curl("-w", "\n%{http_code}", url))  # root: mapped, so identified
    assert code == 200
    for account in (stranger, allowed):
        code, body = answer(account.curl("-w", "\n%{http_code}", url))
        assert code == 403, (account, body)
        assert "PrivateUsers" in str(body["message"]), body
        assert "client_key_file" in str(body["message"]), body
        assert "shared-machine.conf" in str(body["message"]), body
    code, body = answer(stranger.curl("-w", "\n%{http_code}", daemon.reverse_url + "/-/health"))
    assert code == 403, body  # no login state (or login URL) for them either
    assert world.sandbox.stats()["authorization_headers_seen"] == before + 1


def test_the_client_key_admits_an_account_outside_the_namespace(
        world: World, daemons: list[DaemonProcess], accounts: list[Account]) -> None:
    stranger = accounts[0]
    key_file = world.tmp / "keys" / "client.key"
    world.config["proxy"]["client_key_file"] = str(key_file)
    daemon = start(world, daemons, key_file)
    url = daemon.reverse_url + "/v1/projects"
    key = key_file.read_text().strip()

    code, body = answer(stranger.curl("-w", "\n%{http_code}", url))
    assert code == 403 and "PrivateUsers" in str(body["message"]), body
    code, body = answer(stranger.curl("-w", "\n%{http_code}", "-H",
                                      f"X-Qonic-Proxy-Key: {key}", url))
    assert code == 200, body
