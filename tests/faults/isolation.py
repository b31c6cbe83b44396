"""Ways to run the daemon inside a fault: a tiny private file system, a wall clock we move.

- `private_tmpfs`: the daemon runs in its own mount namespace (unshare --mount, propagation
  private) with a small tmpfs over the token-cache folder; only that process sees it, and it is
  gone when the process ends. The test fills or frees it, or makes it read-only, with nsenter.
- `FakeWallClock`: the daemon runs under libfaketime with a control file the test rewrites
  (FAKETIME_NO_CACHE=1: read on every call) to jump the wall clock; the monotonic clock stays
  real (DONT_FAKE_MONOTONIC=1). libfaketime 0.9.10 then fails time.sleep with EINVAL (its
  clock_nanosleep wrapper), which the daemon uses only while it waits for a contended file lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def need_mount_namespace() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a tmpfs in a private mount namespace (CI runs as root)")
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian util-linux / mount)")


def private_tmpfs(folder: Path, size: str = "64k") -> list[str]:
    """A prefix for World.daemon: a `size` tmpfs over `folder`, seen only by the daemon."""
    need_mount_namespace()
    folder.mkdir(parents=True, exist_ok=True)
    script = 'mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$0" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(folder), size]


def in_namespace(pid: int, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `command` in the mount namespace of process `pid` (sees its private tmpfs)."""
    return subprocess.run(["nsenter", "--target", str(pid), "--mount", *command],
                          capture_output=True, text=True, timeout=30, check=check)


def fill(pid: int, folder: Path) -> None:
    """Fill the file system under `folder` (as the daemon sees it) to the last byte."""
    in_namespace(pid, "sh", "-c", f'dd if=/dev/zero of="{folder}/filler" bs=4k 2>/dev/null; '
                 f'dd if=/dev/zero of="{folder}/filler2" bs=1 2>/dev/null; true')


def free(pid: int, folder: Path) -> None:
    in_namespace(pid, "rm", "-f", f"{folder}/filler", f"{folder}/filler2")


def remount(pid: int, folder: Path, mode: str) -> None:
    """`mode` "ro" or "rw": remount the daemon's private tmpfs (root ignores chmod).

    A read-only remount fails (EBUSY) while a file there is open for writing, e.g. the lock
    during a refresh: try again for a few seconds, as an administrator would.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            in_namespace(pid, "mount", "-o", f"remount,{mode}", str(folder))
            return
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class FakeWallClock:
    """The daemon's wall clock = real time + `offset`, changed while it runs."""

    def __init__(self, tmp: Path) -> None:
        if not LIBFAKETIME.exists():
            pytest.skip(f"needs libfaketime ({LIBFAKETIME}; Debian package faketime)")
        self.control = tmp / "faketime"
        self.offset = 0
        self.jump(0)

    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(self.control),
                "FAKETIME_NO_CACHE": "1", "DONT_FAKE_MONOTONIC": "1"}

    def jump(self, seconds: int) -> None:
        self.offset += seconds
        tmp = self.control.with_suffix(".new")
        tmp.write_text(f"{self.offset:+d}\n")
        tmp.replace(self.control)
