"""End-to-end, with real local accounts: [access.rules] per account, in both modes, and minted
keys that no other account can use or tie to the owner's processes (issue 11 points 3 and 5)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.access.accounts import Account
from tests.access.test_e2e_accounts import api_seen, audit_lines, body_of
from tests.harness import DaemonProcess, World, curl

pytestmark = pytest.mark.e2e
QUERY = "/v1/projects/p-1001/models/m-1/products/query"


def start(world: World, daemons: list[DaemonProcess], accounts: list[Account]) -> DaemonProcess:
    _, allowed, reporter = accounts
    world.config["access"] = {
        "users": [allowed.name], "audit_log": str(world.tmp / "audit" / "audit.jsonl")}
    world.config["access.rules"] = {  # written as its own [access.rules] table
        reporter.name: ["GET /v1/**", "POST /v1/projects/*/models/*/products/query"]}
    daemon = world.daemon(env=world.env())
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    return daemon


def test_an_account_with_rules_sends_only_what_they_allow(
        world: World, daemons: list[DaemonProcess], accounts: list[Account]) -> None:
    _, _, reporter = accounts
    daemon = start(world, daemons, accounts)
    url = daemon.reverse_url
    assert reporter.curl("-f", url + "/v1/projects").returncode == 0
    before = api_seen(world)
    query = reporter.curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", "{}",
                          url + QUERY)
    assert query.stdout != "403" and api_seen(world) != before  # allowed: it reached the API
    seen = api_seen(world)
    for path in ("/v1/echo", "/v1/projects/p-1001/models/m-1/products/%2E%2E/delete/query",
                 "/v1/projects/p%2F1/models/m-1/products/query"):
        code, body = body_of(reporter.curl("-w", "\n%{http_code}", "-X", "POST", "-d", "x=1",
                                           url + path))
        assert code == 403 and body["error"] == "rule_refused", path
        assert "'" + reporter.name + "'" in str(body["message"])
    assert api_seen(world) == seen  # nothing refused went upstream

    with tempfile.TemporaryDirectory(prefix="qp-shared-ca-") as shared:  # others may read it
        os.chmod(shared, 0o755)  # noqa: S103 - the other account must read the CA
        ca = Path(shared) / "proxy-ca.pem"
        shutil.copy(world.proxy_ca, ca)
        os.chmod(ca, 0o644)
        via = ["--proxy", daemon.forward_url, "--noproxy", "", "--cacert", str(ca)]
        code, body = body_of(reporter.curl("-w", "\n%{http_code}", *via, "-X", "DELETE",
                                           world.sandbox.url + "/v1/projects/p-1001"))
        assert code == 403 and body["error"] == "rule_refused"
        assert reporter.curl("-f", *via, world.sandbox.url + "/v1/projects").returncode == 0
    assert api_seen(world) != seen  # only the GET

    refused = [line for line in audit_lines(world) if line["reason"] == "rule_refused"]
    assert {line["uid"] for line in refused} == {reporter.uid}
    assert {line["listener"] for line in refused} == {"reverse", "forward"}
    assert len(refused) == 4 and all(line["status"] == 403 for line in refused)


def test_a_minted_key_is_no_use_to_another_account(
        world: World, daemons: list[DaemonProcess], accounts: list[Account]) -> None:
    stranger, allowed, _ = accounts
    daemon = start(world, daemons, accounts)
    url = daemon.reverse_url
    code, body = body_of(curl("-w", "\n%{http_code}", "-X", "POST", "-H",
                              f"X-Qonic-Proxy-Pid: {os.getpid()}", url + "/-/keys"))
    assert code == 201, body
    key = str(body["key"])
    assert curl("-f", "-H", f"X-Qonic-Proxy-Key: {key}", url + "/v1/projects").returncode == 0
    before = api_seen(world)
    code, refusal = body_of(allowed.curl("-w", "\n%{http_code}", "-H",
                                         f"X-Qonic-Proxy-Key: {key}", url + "/v1/projects"))
    assert code == 403 and refusal["error"] == "key_not_yours"
    code, refusal = body_of(stranger.curl("-w", "\n%{http_code}", "-u", f"qonic:{key}",
                                          url + "/v1/projects"))
    assert code == 403 and refusal["error"] == "peer_not_allowed"
    assert api_seen(world) == before
    # nor may another account tie a key of its own to the owner's process (to outlive it)
    code, refusal = body_of(allowed.curl("-w", "\n%{http_code}", "-X", "POST", "-H",
                                         f"X-Qonic-Proxy-Pid: {os.getpid()}", url + "/-/keys"))
    assert code == 403 and "your own" in str(refusal["message"])
    # and it cannot revoke the owner's key
    code, refusal = body_of(allowed.curl("-w", "\n%{http_code}", "-X", "DELETE",
                                         f"{url}/-/keys/{body['key_id']}"))
    assert code == 403 and refusal["error"] == "not_your_key"
    lines = audit_lines(world)
    assert any(line["key_id"] == body["key_id"] and line["reason"] == "key_not_yours"
               for line in lines)
    assert key.split(".")[2] not in json.dumps(lines)
