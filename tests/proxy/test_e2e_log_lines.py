"""End-to-end: what the daemon logs and answers around logins, shutdown and forward requests."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from qonic_proxy.ports import free_port
from tests.harness import BROWSER_SCRIPT, DaemonProcess, World, curl, http_request, wait_for

pytestmark = pytest.mark.e2e


def _logged_in_lines(daemon: DaemonProcess) -> int:
    return len(re.findall(r"^.*logged in to Qonic.*$", daemon.stderr_text(), re.MULTILINE))


def test_one_logged_in_line_per_login(world: World, logged_in: DaemonProcess):
    wait_for(lambda: "the new token is in use" in logged_in.stderr_text(), 10, "the login")
    assert _logged_in_lines(logged_in) == 1, logged_in.stderr_text()


def test_a_login_while_logged_in_is_not_announced_as_needed(world: World,
                                                            logged_in: DaemonProcess):
    assert logged_in.stderr_text().count("login needed") == 1  # the first login, at start
    started = curl("-o", "/dev/null", "-w", "%{http_code}", logged_in.reverse_url + "/-/login")
    assert started.stdout in ("302", "303", "307"), started
    before = logged_in.stderr_text()
    assert "a new login was started while logged in" in before
    assert before.count("login needed") == 1
    authorize = re.findall(r"open this URL in a browser: (\S+)", before)[-1]
    subprocess.run([sys.executable, str(BROWSER_SCRIPT), authorize], env=world.env(),
                   check=True, timeout=60)
    wait_for(lambda: _logged_in_lines(logged_in) == 2, 20, "the second login")
    assert logged_in.stderr_text().count("login needed") == 1


def test_stopping_logs_a_line(world: World, logged_in: DaemonProcess):
    assert logged_in.stop() == 0
    assert re.search(r"qonic-proxy stopped \(pid \d+, up \d+ s\)",
                     logged_in.stderr_path.read_text())


def test_the_forward_access_log_shows_the_real_destination(world: World,
                                                           logged_in: DaemonProcess):
    port = world.sandbox.url.rsplit(":", 1)[1]
    result = curl("-f", "--proxy", logged_in.forward_url, "--cacert", str(world.proxy_ca),
                  world.sandbox.url + "/v1/projects?secret=x")
    assert result.returncode == 0, result.stderr
    plain = curl("--proxy", logged_in.forward_url, "-H", "Host: decoy.example",
                 f"http://localhost:{free_port()}/elsewhere")  # nothing there: 502
    assert plain.returncode == 0, plain.stderr
    log = logged_in.stderr_text()
    assert f"forward GET https://127.0.0.1:{port}/v1/projects 200" in log
    assert re.search(r"forward GET http://localhost:\d+/elsewhere ", log), log
    assert "decoy.example" not in log and "secret=x" not in log


def test_after_a_failed_login_api_calls_get_the_cause(world: World,
                                                      daemons: list[DaemonProcess]):
    daemon = world.daemon(env=world.env(QONIC_CLIENT_SECRET="wrong-secret-" + "0" * 8))
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: "login failed" in daemon.stderr_text(), 30, "the failed login")
    status, _, body = http_request(daemon.reverse_url + "/v1/projects")
    assert status == 401
    message = json.loads(body)["message"]
    _, health = daemon.health()
    assert health["last_login_error"].rstrip(".") in message
    assert "The last login failed: " in message and "invalid_client" in message
    assert "Log in to Qonic: open http://127.0.0.1:" in message  # and what to do
    assert "wrong-secret" not in message
