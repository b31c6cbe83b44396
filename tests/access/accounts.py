"""Real extra local accounts for the multi-account tests (root only), and curl run as them."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Account:
    name: str
    uid: int

    def curl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """curl as this account (no proxy from the environment)."""
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", "PATH=/usr/bin:/bin",
             "curl", "-sS", "--noproxy", "*", "--max-time", str(int(timeout)), *args],
            capture_output=True, text=True, timeout=timeout + 10, stdin=subprocess.DEVNULL)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates local accounts with useradd (CI runs as root)")
    for tool in ("useradd", "userdel", "runuser", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} to act as another local account")


@contextmanager
def local_accounts(count: int) -> Iterator[list[Account]]:
    """`count` fresh accounts (unique names), always removed with `userdel -r` afterwards."""
    need_root()
    made: list[Account] = []
    try:
        for _ in range(count):
            name = "qpt" + secrets.token_hex(4)
            subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", name], check=True,
                           capture_output=True, timeout=30)
            made.append(Account(name, pwd.getpwnam(name).pw_uid))
        yield made
    finally:
        for account in made:
            subprocess.run(["userdel", "-r", account.name], capture_output=True, timeout=30)
