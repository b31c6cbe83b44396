"""Tests for qonic_proxy.cli.demo: ports as the daemon binds them, and a demo run as a user."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from qonic_proxy.cli.demo import port_if_free
from tests.cli.user import new_user


def _time_wait_port() -> int:
    """A port whose only trace is a TIME_WAIT connection (the server side closed first).

    The listener sets SO_REUSEADDR as asyncio (so mitmproxy, so an earlier demo) does; Linux
    lets a new bind over TIME_WAIT only when both sockets set it.
    """
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the side that closes first keeps TIME_WAIT on the listening port
        time.sleep(0.05)
        client.close()
    return port


def test_time_wait_does_not_count_as_busy() -> None:
    assert port_if_free(_time_wait_port())


def test_a_listener_and_port_zero_count_as_busy() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert not port_if_free(busy.getsockname()[1])
    assert not port_if_free(0)


@pytest.mark.e2e
def test_demo_twice_keeps_its_ports_and_port_zero_names_real_ones(tmp_path: Path) -> None:
    user = new_user(tmp_path)
    runs = [user.run("demo", "--once", "--port", "0", "--forward-port", "0", timeout=120)]
    first = runs[0]
    assert first.returncode == 0, first.stderr
    assert "None" not in first.stdout and "was busy" not in first.stdout
    assert re.search(r"curl --proxy http://127\.0\.0\.1:\d+ ", first.stdout)
    ports = re.search(r"reverse http://127\.0\.0\.1:(\d+), forward http://127\.0\.0\.1:(\d+)",
                      first.stdout)
    assert ports, first.stdout
    wanted = [str(_time_wait_port()), str(_time_wait_port())]
    again = user.run("demo", "--once", "--port", wanted[0], "--forward-port", wanted[1],
                     timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"reverse http://127.0.0.1:{wanted[0]}, forward http://127.0.0.1:{wanted[1]}" in (
        again.stdout), again.stdout
    assert "was busy" not in again.stdout


@pytest.mark.e2e
def test_the_demo_asks_nobody_to_open_a_browser(tmp_path: Path) -> None:
    run = new_user(tmp_path).run("demo", "--once", "--port", "0", "--forward-port", "0",
                                 timeout=120)
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    assert "login needed" not in output and "open this URL" not in output, output
