"""End-to-end, as a new user: the sandbox's own config snippet, pasted into `init`'s file, works.

Only the installed console script is used, with a clean HOME; the login goes through the real
loopback callback with the scripted browser.
"""

from __future__ import annotations

import re
import shlex
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import __file__ as BROWSER_SCRIPT
from tests.cli.user import User, new_user
from tests.harness import free_port

pytestmark = pytest.mark.e2e
READY = re.compile(r"sandbox ready: url=(\S+) ca_file=(\S*)\n")


class RunningSandbox:
    def __init__(self, user: User, *args: str) -> None:
        self.proc = user.start("sandbox", *args)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        found = READY.fullmatch(self.proc.stdout.readline())
        assert found, self.proc.stderr.read()
        self.url, self.ca_file = found.groups()
        lines = []
        while (line := self.proc.stderr.readline()) and not line.startswith("# client secret"):
            lines.append(line)
        self.snippet = "".join([*lines, line])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def sandboxes() -> Iterator[list[RunningSandbox]]:
    started: list[RunningSandbox] = []
    yield started
    for sandbox in started:
        sandbox.stop()


def paste(snippet: str, config: Path) -> None:
    """What the snippet tells the user: its keys over the same keys of the init file."""
    text = config.read_text()
    for key, value in re.findall(r"^(\w+) = (.+)$", snippet, re.M):
        text, count = re.subn(rf"^#? ?{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        assert count == 1, key
    config.write_text(text)


def login_env(sandbox: RunningSandbox) -> dict[str, str]:
    secret = re.search(r"export QONIC_CLIENT_SECRET=(\S+)", sandbox.snippet)
    assert secret, sandbox.snippet
    return {"BROWSER": f"{shlex.quote(sys.executable)} {shlex.quote(BROWSER_SCRIPT)} %s",
            "SANDBOX_CA": sandbox.ca_file, "QONIC_CLIENT_SECRET": secret.group(1)}


def first_login(user: User, sandboxes: list[RunningSandbox], *args: str) -> RunningSandbox:
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    sandbox = RunningSandbox(user, "--auto-consent", "--redirect-uri", redirect, *args)
    sandboxes.append(sandbox)
    assert user.run("init").returncode == 0
    paste(sandbox.snippet, user.config_file)
    login = user.run("login", extra_env=login_env(sandbox))
    assert login.returncode == 0, login.stderr
    assert "Logged in to Qonic" in login.stdout
    token = user.run("token")
    assert token.returncode == 0 and token.stdout.strip(), token.stderr
    return sandbox


def test_the_snippet_logs_in_and_cert_dir_keeps_the_ca(tmp_path: Path,
                                                       sandboxes: list[RunningSandbox]) -> None:
    user = new_user(tmp_path)
    port, cert_dir = str(free_port()), str(tmp_path / "sandbox-ca")
    sandbox = first_login(user, sandboxes, "--port", port, "--cert-dir", cert_dir)
    assert "sandbox-client" in sandbox.snippet and "survives restarts" not in sandbox.snippet
    ca_before = Path(sandbox.ca_file).read_bytes()
    sandbox.stop()

    again = RunningSandbox(user, "--port", port, "--cert-dir", cert_dir)
    sandboxes.append(again)
    assert (again.url, Path(again.ca_file).read_bytes()) == (sandbox.url, ca_before)
    context = ssl.create_default_context(cafile=again.ca_file)  # the config's CA still verifies
    with urllib.request.urlopen(again.url + "/v1/auth/scopes", context=context, timeout=10) as r:
        assert r.status == 200


def test_plain_http_sandbox_on_loopback_is_accepted(tmp_path: Path,
                                                    sandboxes: list[RunningSandbox]) -> None:
    user = new_user(tmp_path)
    sandbox = first_login(user, sandboxes, "--plain-http")
    assert sandbox.url.startswith("http://127.0.0.1:") and "ca_file" not in sandbox.snippet
