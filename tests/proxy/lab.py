"""Shared helpers of the proxy's attack tests: a logged-in daemon "lab", raw sockets, parsing.

The API is configured by *name* (`https://localhost:PORT`) so that aliases (127.0.0.1,
LOCALHOST, trailing dots) and suffix tricks can be told apart from the real origin. A recording
"bystander" server stands for every host that is not the API: it must never see a token.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qonic_proxy.proxy import client_key
from tests.harness import (
    TESTS,
    Bystander,
    DaemonProcess,
    World,
    curl,
    http_request,
    make_world,
    start_bystander,
    wait_for,
)

ROOT = TESTS.parent


# ----- helpers ---------------------------------------------------------------------------------
def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send bytes that well-behaved clients refuse to send; return everything until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if _complete(received):  # keep-alive answers (e.g. a 407) do not close
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return received


def _complete(received: bytes) -> bool:
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def no_cors(headers: dict[str, str]) -> bool:
    return not any(k.lower().startswith("access-control-") for k in headers)


def api_traffic(world: World) -> tuple[Any, ...]:
    stats = world.sandbox.stats()
    return (stats["api"], stats["authorization_headers_seen"])


@dataclass
class Lab:
    world: World
    daemon: DaemonProcess
    bystander: Bystander
    api: str  # https://localhost:PORT

    @property
    def api_port(self) -> int:
        return port_of(self.api)

    @property
    def reverse_port(self) -> int:
        return port_of(self.daemon.reverse_url)

    @property
    def forward_port(self) -> int:
        return port_of(self.daemon.forward_url)

    def via_forward(self, *args: str) -> subprocess.CompletedProcess[str]:
        return curl("--proxy", self.daemon.forward_url, "--cacert", str(self.world.proxy_ca),
                    *args, timeout=20)


def _start_lab(tmp: Path, *, key: bool) -> Lab:
    bystander = start_bystander(tmp)
    world = make_world(tmp, export_redirect_url=bystander.plain + "/exported.ifc")
    api = world.sandbox.url.replace("127.0.0.1", "localhost")
    world.config["qonic"]["api_url"] = api
    if key:
        world.config["proxy"]["client_key_file"] = str(tmp / "keys" / "client.key")
    daemon = world.daemon()
    try:
        daemon.wait_ready()

        def logged_in() -> bool:
            headers = {}
            if key:
                headers[client_key.KEY_HEADER] = (tmp / "keys" / "client.key").read_text().strip()
            return http_request(daemon.reverse_url + "/-/health", headers=headers)[0] == 200

        wait_for(logged_in, 30, "the daemon to be logged in")
    except BaseException:
        daemon.stop()
        world.sandbox.stop()
        bystander.stop()
        raise
    return Lab(world, daemon, bystander, api)


@contextlib.contextmanager
def _running_lab(tmp: Path, *, key: bool) -> Iterator[Lab]:
    lab = _start_lab(tmp, key=key)
    try:
        yield lab
    finally:
        lab.daemon.stop()
        lab.world.sandbox.stop()
        lab.bystander.stop()



def _key(lab: Lab) -> str:
    return (lab.world.tmp / "keys" / "client.key").read_text().strip()



def _health_latency(lab: Lab) -> float:
    started = time.monotonic()
    status, _, _ = http_request(lab.daemon.reverse_url + "/-/health", timeout=5)
    assert status == 200
    return time.monotonic() - started

