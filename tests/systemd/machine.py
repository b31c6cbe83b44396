"""A throw-away systemd container (systemd-nspawn) for driving the units under a real manager.

`Machine.boot()` runs tests/systemd/boot.sh in a private mount namespace and in cgroups of its
own; `close()` powers the container off and removes those cgroups. Nothing else of the host
changes: every mount lives in the namespace, every write in the overlay's tmpfs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.harness import wait_for

BOOT = Path(__file__).resolve().parent / "boot.sh"
ROOT = Path(__file__).resolve().parents[2]
CGROUP = Path("/sys/fs/cgroup")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "HOME": "/root"}


def why_not() -> str | None:
    """Why the container cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, mounts, cgroups); CI runs it as root"
    for tool in ("systemd-nspawn", "unshare", "nsenter", "timeout", "curl"):
        if shutil.which(tool) is None:
            package = "systemd-container" if tool == "systemd-nspawn" else tool
            return f"{tool} is missing (.ci/run installs {package} as root)"
    if not Path("/usr/bin/python3").is_file():
        return "/usr/bin/python3 is missing (the container's venv is made from it)"
    if not cgroup_roots():
        return "no writable cgroup hierarchy under /sys/fs/cgroup"
    return None


def cgroup_roots() -> list[Path]:
    """The hierarchies systemd uses: the unified one, plus name=systemd on a hybrid host."""
    if (CGROUP / "cgroup.controllers").is_file():
        return [CGROUP]
    return [p for p in (CGROUP / "unified", CGROUP / "systemd") if (p / "cgroup.procs").is_file()]


def _ns_pid(pid: int) -> list[str]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return line.split()[1:]
    except OSError:
        pass
    return []


class Machine:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log = tmp / "machine.log"
        name = f"qp-machine-{os.getpid()}-{os.urandom(3).hex()}"
        self.cgroups = [root / name for root in cgroup_roots()]
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0

    # ----- life cycle ----------------------------------------------------------------------
    def boot(self, timeout: float = 150) -> Machine:
        for cg in self.cgroups:
            cg.mkdir()
        mnt = self.tmp / "mnt"
        mnt.mkdir()
        procs = " ".join(f"'{cg}/cgroup.procs'" for cg in self.cgroups)
        script = (f"for f in {procs}; do echo $$ > \"$f\"; done; exec timeout -s KILL 600 "
                  f"unshare -m --propagation private sh '{BOOT}' '{mnt}' '{ROOT}'")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(["sh", "-c", script], stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, env=ENV)
        self.leader = wait_for(self._find_leader, timeout, "the container's systemd to start")
        wait_for(lambda: self.path("/run/systemd/private").is_socket(), 60,
                 "the container's manager to listen")
        state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=90)
        assert state.stdout.strip() in ("running", "degraded"), state.stdout + self.tail()
        return self

    def _find_leader(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the container exited with {self.proc.returncode}:\n"
                                 + self.tail())
        for pid in self._pids():
            ns = _ns_pid(pid)
            if len(ns) == 2 and ns[1] == "1":
                return pid
        return 0

    def _pids(self) -> list[int]:
        pids: list[int] = []
        for cg in self.cgroups:
            for procs in cg.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in procs.read_text().split()]
        return pids

    def close(self) -> None:
        """Power off; kill whatever is left in our cgroups; remove them."""
        if self.proc is not None and self.proc.poll() is None:
            if self.leader:
                self.run("systemctl", "poweroff", check=False, timeout=15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        for _ in range(100):
            pids = self._pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if self.proc is not None:
            self.proc.wait(10)
        for cg in self.cgroups:
            if cg.exists():
                for sub in sorted(cg.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        sub.rmdir()
                cg.rmdir()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    # ----- inside the container ------------------------------------------------------------
    def path(self, inside: str) -> Path:
        """A path of the container's file system, as the host sees it."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644, owner: int = 0) -> None:
        path = self.path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chown(path, owner, owner)
        path.chmod(mode)

    def run(self, *argv: str, check: bool = True, timeout: float = 30, user: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A command in all of the container's namespaces (as `user`, via runuser, if given)."""
        command = list(argv)
        if user is not None:
            command = ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in
                                                         (env or {}).items()], *command]
        elif env:
            command = ["env", *[f"{k}={v}" for k, v in env.items()], *command]
        result = subprocess.run(
            ["timeout", "-s", "KILL", str(int(timeout)), "nsenter", "-t", str(self.leader),
             "-a", *command], capture_output=True, text=True, timeout=timeout + 10, env=ENV,
            stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, (
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def show(self, unit: str, *props: str, user: str | None = None,
             env: dict[str, str] | None = None) -> dict[str, str]:
        argv = ["systemctl", *(["--user"] if user else []), "show", unit,
                "-p", ",".join(props)]
        out = self.run(*argv, user=user, env=env).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
