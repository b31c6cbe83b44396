"""End-to-end, with a real second local account: while the daemon is stopped, that account binds
its port with a recording server (issue 11, point 4). `status`, `token`, `login --paste` and
`exec` must send it nothing (no client key, no pasted address, no child's request body), say
which account holds the port, and go on without it: `status` does not report a daemon,
`token` refreshes by itself, `login --paste` logs in by itself, `exec` starts its own proxy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qonic_proxy.ports import free_port
from tests.access.accounts import Account, local_accounts
from tests.harness import World, make_world

pytestmark = pytest.mark.e2e

KEY = "client-key-MARKER-" + "k" * 24
PASTED = "PASTED-CODE-MARKER"
BODY = "CHILD-BODY-MARKER"

# Binds the port, answers every request like a logged-in qonic-proxy for this API (to lure the
# CLI on), and prints every byte it ever receives as one hex line; stops when stdin closes.
RECORDER = r"""
import json, socket, sys, threading
port, api_url = int(sys.argv[1]), sys.argv[2]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(64)
health = json.dumps({"status": "ok", "logged_in": True, "login_in_progress": True,
                     "api_url": api_url, "pid": 1,
                     "listeners": {"reverse": f"http://127.0.0.1:{port}",
                                   "forward": f"http://127.0.0.1:{port}"}}).encode()
lock = threading.Lock()
def serve(conn):
    conn.settimeout(3)
    try:
        data = conn.recv(65536)
        with lock:
            print(data.hex(), flush=True)
        if data:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(health) + health)
    except OSError:
        pass
    finally:
        conn.close()
def accept():
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def squatter() -> Iterator[Account]:
    with local_accounts(1) as made:
        yield made[0]


def cli(world: World, verb: str, *args: str, stdin: str = "",
        ) -> subprocess.CompletedProcess[str]:
    world.write_config()
    return subprocess.run([sys.executable, "-m", "qonic_proxy", verb,
                           "--config", str(world.config_path), *args], env=world.env(),
                          input=stdin, capture_output=True, text=True, timeout=90)


def test_a_squatter_on_the_port_gets_nothing(tmp_path: Path, squatter: Account) -> None:
    world = make_world(tmp_path, access_token_lifetime=4)  # every token is soon due
    try:
        port = free_port()
        key_file = tmp_path / "client.key"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)
        world.config["proxy"].update(port=port, client_key_file=str(key_file))
        world.config["oauth"]["login_timeout"] = 20
        login = cli(world, "login")
        assert login.returncode == 0, login.stderr

        recorder = subprocess.Popen(
            ["runuser", "-u", squatter.name, "--", "/usr/bin/python3", "-c", RECORDER,
             str(port), world.sandbox.url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert recorder.stdout is not None and recorder.stdout.readline() == "ready\n"
            holder = f"port {port} on 127.0.0.1 is held by account {squatter.name} " \
                     f"(uid {squatter.uid}), not by this config's qonic-proxy"
            time.sleep(2.5)  # past half the token's life: `token` must refresh

            status = cli(world, "status", "--json")
            assert holder in status.stderr
            assert json.loads(status.stdout)["daemon"] is None  # not "running"

            token = cli(world, "token")
            assert token.returncode == 0, token.stderr
            assert holder in token.stderr

            callback = world.config["oauth"]["redirect_uri"]
            pasted = cli(world, "login", "--paste",
                         stdin=f"{callback}?code={PASTED}&state=not-the-state\n")
            assert pasted.returncode == 0, pasted.stderr  # the browser's callback won
            assert holder in pasted.stderr

            child = f'curl -sS -o /dev/null -w "%{{http_code}}" -d {BODY} "$QONIC_API_URL/echo"'
            wrapped = cli(world, "exec", "--", "sh", "-c", child)
            assert wrapped.returncode == 0, wrapped.stderr
            assert wrapped.stdout.strip() == "200"  # through exec's own private proxy
            assert holder in wrapped.stderr
        finally:
            try:
                received, _ = recorder.communicate(timeout=20)  # closes its stdin: it stops
            finally:
                recorder.kill()  # runuser, by pid, should it hang
        seen = b"".join(bytes.fromhex(line) for line in received.split()[1:])
        assert seen == b""  # not a request line, let alone the key, the address or the body
        for marker in (KEY, PASTED, BODY):
            assert marker.encode() not in seen
    finally:
        world.sandbox.stop()
