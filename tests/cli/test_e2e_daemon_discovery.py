"""End-to-end, as a user: a second `run` for the same config, and `status` with `port = 0`.

A clean HOME, the config from `init` with the sandbox's own snippet pasted in, and only the
installed console script.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.cli.user import RunningSandbox, User, first_login, new_user, sandboxes_fixture  # noqa: F401

pytestmark = pytest.mark.e2e
READY = re.compile(r"qonic-proxy ready: reverse (http://127\.0\.0\.1:(\d+)) ")


def start_daemon(user: User, *args: str) -> tuple[subprocess.Popen[str], str, int]:
    proc = user.start("run", *args)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = READY.match(line)
    if not found:
        proc.kill()
        pytest.fail(f"no ready line: {line!r} {proc.communicate(timeout=10)[1]}")
    return proc, found.group(1), int(found.group(2))


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_second_run_and_status_with_port_zero(tmp_path: Path,
                                              sandboxes: list[RunningSandbox]) -> None:
    user = new_user(tmp_path)
    sandbox = first_login(user, sandboxes)
    text = user.config_file.read_text()
    user.config_file.write_text(re.sub(r"^port = 8080$", "port = 0", text, count=1, flags=re.M))

    daemon, url, port = start_daemon(user)
    try:
        second = user.run("run", timeout=30)
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"qonic-proxy: qonic-proxy is already running for this config {user.config_file} "
            f"(pid {daemon.pid}, {url}); use that one, or stop it before starting another"]

        status = user.run("status", "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["daemon"]["pid"] == daemon.pid
        assert report["daemon"]["listeners"]["reverse"] == f"http://127.0.0.1:{port}"

        other = user.home / "other.toml"  # another config: the daemon above is not its daemon
        assert user.run("init", "--config", str(other), "--client-id", "x").returncode == 0
        other.write_text(other.read_text().replace('api_url = "https://api.qonic.com"',
                                                   f'api_url = "{sandbox.url}"'))
        theirs = user.run("status", "--json", "--config", str(other))
        assert json.loads(theirs.stdout)["daemon"] is None, theirs.stderr
    finally:
        stop(daemon)
    gone = user.run("status", "--json")
    assert json.loads(gone.stdout)["daemon"] is None
    assert not list(user.home.glob(".local/state/qonic-proxy/daemon-*.json"))
