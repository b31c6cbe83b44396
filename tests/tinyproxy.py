"""A real HTTP proxy from Debian (tinyproxy) on 127.0.0.1, for the `[qonic] upstream_proxy` tests.

The binary is not installed system-wide: `.ci/run` unpacks Debian's package into a cache folder
(`apt-get download tinyproxy-bin` + `dpkg-deb -x`) and names it in $QONIC_TEST_TINYPROXY. It
only needs libc. Tests skip with the reason when it cannot be found.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from qonic_proxy.ports import free_port
from tests.harness import stop_process

ENV_BINARY = "QONIC_TEST_TINYPROXY"
CACHE_BINARY = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "qonic-proxy-ci" / "tinyproxy" / "usr" / "bin" / "tinyproxy")
_CONNECT = re.compile(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/1\.[01]")


def tinyproxy_binary() -> str | None:
    for candidate in (os.environ.get(ENV_BINARY), shutil.which("tinyproxy"), str(CACHE_BINARY)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class Tinyproxy:
    proc: subprocess.Popen[bytes]
    port: int
    log_file: Path
    user: str | None
    password: str | None

    def url(self, password: str | None = None) -> str:
        if self.user is None:
            return f"http://127.0.0.1:{self.port}"
        return f"http://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def connects(self) -> list[str]:
        """The host:port of every CONNECT the proxy received, in order."""
        return _CONNECT.findall(self.log_text())

    def stop(self) -> None:
        stop_process(self.proc)


def start_tinyproxy(tmp: Path, *, user: str | None = None,
                    password: str | None = None) -> Tinyproxy:
    binary = tinyproxy_binary()
    if binary is None:
        pytest.skip("tinyproxy not found: .ci/run unpacks Debian's tinyproxy-bin into "
                    f"{CACHE_BINARY.parents[2]} (or set ${ENV_BINARY})")
    port = free_port()
    folder = tmp / "tinyproxy"
    folder.mkdir(exist_ok=True)
    log_file = folder / "tinyproxy.log"
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 30", f'LogFile "{log_file}"',
             "LogLevel Connect", "MaxClients 50", "Allow 127.0.0.1"]  # no ConnectPort: any port
    if user is not None:
        lines.append(f"BasicAuth {user} {password}")
    config = folder / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-d", "-c", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"tinyproxy did not start: {log_file.read_text()[-2000:]}"
                                     if log_file.exists() else "tinyproxy did not start"
                                     ) from None
            time.sleep(0.05)
    return Tinyproxy(proc, port, log_file, user, password)
