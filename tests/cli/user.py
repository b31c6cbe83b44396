"""A new user at a shell: a clean HOME, the installed `qonic-proxy` console script, nothing else.

The end-to-end first-run tests drive the program only through it, as the README tells a user to.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
