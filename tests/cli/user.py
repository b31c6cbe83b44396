"""A new user at a shell: a clean HOME, the installed `qonic-proxy` console script, nothing else.

The end-to-end first-run tests drive the program only through it, as the README tells a user to.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser import __file__ as BROWSER_SCRIPT
from tests.harness import free_port, stop_process

KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")


def console_script() -> list[str]:
    """The installed console script beside this Python, else the module (an uninstalled tree)."""
    script = Path(sys.executable).parent / "qonic-proxy"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "qonic_proxy"]


@dataclass
class User:
    home: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in KEPT_VARIABLES if k in os.environ}
        env["HOME"] = str(self.home)
        return env

    @property
    def config_file(self) -> Path:
        return self.home / ".config" / "qonic-proxy" / "config.toml"

    def run(self, *args: str, timeout: float = 60, stdin: str | None = None,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*console_script(), *args], env={**self.env, **(extra_env or {})},
                              cwd=self.home, capture_output=True, text=True, timeout=timeout,
                              input=stdin)

    def start(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([*console_script(), *args],
                                env={**self.env, **(extra_env or {})}, cwd=self.home,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def new_user(tmp_path: Path) -> User:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    return User(home)


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
        stop_process(self.proc)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(name="sandboxes")
def sandboxes_fixture() -> Iterator[list[RunningSandbox]]:
    """The sandboxes a test started, stopped at its end (import it into the test module)."""
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
