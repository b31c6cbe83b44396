"""End-to-end, with real second and third local accounts: who may use the proxy, who may only
read, who may reach the login callback, and what the audit log says (issue 11)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.access.accounts import Account
from tests.harness import DaemonProcess, World, curl, wait_for

pytestmark = pytest.mark.e2e


def start(world: World, daemons: list[DaemonProcess], accounts: list[Account], *,
          login: bool = True, **env: str) -> DaemonProcess:
    _, allowed, reader = accounts
    world.config["access"] = {"users": [allowed.name], "read_only": [reader.uid],
                              "audit_log": str(world.tmp / "audit" / "audit.jsonl")}
    daemon = world.daemon(env=world.env(**env))
    daemons.append(daemon)
    daemon.wait_ready()
    if login:
        daemon.wait_logged_in()
    return daemon


def api_seen(world: World) -> dict[str, int]:
    stats = world.sandbox.stats()
    return dict(stats["api"], auth=stats["authorization_headers_seen"])


def body_of(result: subprocess.CompletedProcess[str]) -> tuple[int, dict[str, object]]:
    text, _, code = result.stdout.rpartition("\n")
    return int(code), json.loads(text)


def audit_lines(world: World) -> list[dict[str, object]]:
    path = world.tmp / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_accounts_are_refused_allowed_and_limited(world: World, daemons: list[DaemonProcess],
                                                   accounts: list[Account]) -> None:
    stranger, allowed, reader = accounts
    daemon = start(world, daemons, accounts)
    url = daemon.reverse_url
    before = api_seen(world)

    # another account: refused with a 403 JSON naming it and the setting, nothing upstream
    code, body = body_of(stranger.curl("-w", "\n%{http_code}", url + "/v1/projects?secret=q"))
    assert code == 403 and body["error"] == "peer_not_allowed"
    assert stranger.name in str(body["message"]) and "[access] users" in str(body["message"])
    code, body = body_of(stranger.curl("-w", "\n%{http_code}", url + "/-/health"))
    assert code == 403  # the operational endpoints too
    assert api_seen(world) == before
    # ... on the forward listener too: its CONNECT is refused
    tunnel = stranger.curl("-v", "--proxy", daemon.forward_url, "--noproxy", "",
                           world.sandbox.url + "/v1/projects")
    assert tunnel.returncode != 0 and "403" in tunnel.stderr
    assert api_seen(world) == before

    # an allowed account is served
    result = allowed.curl("-f", url + "/v1/projects")
    assert result.returncode == 0, result.stderr
    assert any(p["id"] == "p-1001" for p in json.loads(result.stdout))

    # a read-only account reads, but its POST never goes upstream
    assert reader.curl("-f", url + "/v1/projects").returncode == 0
    seen = api_seen(world)
    code, body = body_of(reader.curl("-w", "\n%{http_code}", "-X", "POST", "-d", "x=1",
                                     url + "/v1/echo"))
    assert code == 403 and body["error"] == "read_only"
    assert api_seen(world) == seen

    # the owner (root here) is served as before
    assert curl("-f", url + "/v1/projects").returncode == 0

    metrics = curl("-s", url + "/-/metrics").stdout
    assert re.search(r'qonic_proxy_rejected_requests_total\{reason="peer_not_allowed"\} [3-9]',
                     metrics), metrics
    assert 'reason="read_only"} 1' in metrics
    log = daemon.stderr_text()
    assert log.count(f"local account {stranger.name}") == 1  # logged once a minute, not per try

    lines = audit_lines(world)
    refused = [line for line in lines if line["uid"] == stranger.uid]
    assert len(refused) == 3 and {line["reason"] for line in refused} == {"peer_not_allowed"}
    assert refused[0]["path"] == "/v1/projects" and refused[0]["status"] == 403
    served = [line for line in lines if line["uid"] == allowed.uid]
    assert served and served[0]["status"] == 200 and served[0]["account"] == allowed.name
    assert served[0]["listener"] == "reverse" and served[0]["reason"] is None
    assert isinstance(served[0]["bytes_down"], int) and served[0]["bytes_down"] > 0
    assert {"time", "bytes_up", "duration_ms", "method"} <= served[0].keys()
    assert str(served[0]["time"]).endswith("Z")
    posted = [line for line in lines if line["uid"] == reader.uid and line["method"] == "POST"]
    assert posted[0]["reason"] == "read_only"
    text = (world.tmp / "audit" / "audit.jsonl").read_text()
    token = json.loads(world.cache_file.read_text()).get("access_token")
    assert "secret=q" not in text and "x=1" not in text and (not token or token not in text)


def test_audit_log_is_private_and_reopened_on_sighup(world: World, daemons: list[DaemonProcess],
                                                     accounts: list[Account]) -> None:
    daemon = start(world, daemons, accounts)
    path = world.tmp / "audit" / "audit.jsonl"
    assert curl("-f", daemon.reverse_url + "/v1/projects").returncode == 0
    wait_for(lambda: path.exists() and path.read_text().count("\n") >= 1, 10, "an audit line")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.rename(path.with_suffix(".1"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: path.exists(), 10, "the audit log to be reopened")
    assert curl("-f", daemon.reverse_url + "/v1/projects").returncode == 0
    wait_for(lambda: path.read_text().count("\n") == 1, 10, "a line in the new audit log")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.with_suffix(".1").read_text().count("\n") >= 1


def test_another_account_cannot_reach_the_login_callback(
        world: World, daemons: list[DaemonProcess], accounts: list[Account]) -> None:
    stranger, _, _ = accounts
    daemon = start(world, daemons, accounts, login=False, BROWSER_DECISION="ignore")
    found = wait_for(lambda: re.search(r"open this URL in a browser: (\S+)",
                                       daemon.stderr_text()), 20, "the authorize URL")
    authorize_url = found.group(1)
    state = re.search(r"[?&]state=([^&]+)", authorize_url)
    assert state is not None
    callback = f"http://127.0.0.1:{world.callback_port}/callback"
    # the login-fixation attempt: right path, right state, a code of its own
    attack = stranger.curl("-i", f"{callback}?code=attacker-code&state={state.group(1)}")
    assert attack.returncode in (52, 56), attack  # reset before any answer: the head was unread
    assert "HTTP/" not in attack.stdout
    assert f"refused a connection from the local account {stranger.name}" in daemon.stderr_text()
    # the owner's own login still completes
    env = world.env()
    env.pop("BROWSER_DECISION", None)
    subprocess.run([sys.executable, str(Path(__file__).parents[1] / "browser.py"),
                    authorize_url], env=env, check=True, timeout=60, capture_output=True)
    daemon.wait_logged_in()
    assert world.sandbox.stats()["token"]["authorization_code"] == {"ok": 1, "error": 0}


def test_forward_read_only_post_inside_the_api_tunnel_is_refused(
        world: World, daemons: list[DaemonProcess], accounts: list[Account]) -> None:
    _, _, reader = accounts
    daemon = start(world, daemons, accounts)
    with tempfile.TemporaryDirectory(prefix="qp-shared-ca-") as shared:  # others may read it
        os.chmod(shared, 0o755)  # noqa: S103 - the other account must read the CA
        ca = Path(shared) / "proxy-ca.pem"
        shutil.copy(world.proxy_ca, ca)
        os.chmod(ca, 0o644)
        read_only_tunnel(world, daemon, reader, ca)


def read_only_tunnel(world: World, daemon: DaemonProcess, reader: Account, ca: Path) -> None:
    via = ["--proxy", daemon.forward_url, "--noproxy", "", "--cacert", str(ca)]
    assert reader.curl("-f", *via, world.sandbox.url + "/v1/projects").returncode == 0
    seen = api_seen(world)
    result = reader.curl("-w", "\n%{http_code}", *via, "-X", "DELETE",
                         world.sandbox.url + "/v1/projects/p-1001")
    code, body = body_of(result)
    assert code == 403 and body["error"] == "read_only"
    assert api_seen(world) == seen
    forward = [line for line in audit_lines(world) if line["listener"] == "forward"]
    assert {line["status"] for line in forward} == {200, 403}
