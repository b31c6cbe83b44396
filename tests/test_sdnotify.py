"""sd_notify against real AF_UNIX datagram receivers (a path socket and an abstract one)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import socket
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qonic_proxy.sdnotify import Notifier

RECV_TIMEOUT = 2.0


class Receiver:
    """A stand-in for systemd's notification socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value  # what systemd would put into $NOTIFY_SOCKET

    def recv(self) -> str:
        self.sock.settimeout(RECV_TIMEOUT)
        return self.sock.recv(65536).decode()

    def pending(self) -> list[str]:
        """Everything already queued, without waiting."""
        out = []
        previous = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(65536).decode())
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(previous)

    def notifier(self, **extra: str) -> Notifier:
        return Notifier.from_env({"NOTIFY_SOCKET": self.env_value, **extra})


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # A short directory: AF_UNIX paths are limited to 108 bytes, pytest's tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="qn-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        yield Receiver(sock, path)
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = "qonic-proxy-test-" + secrets.token_hex(8)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        yield Receiver(sock, "@" + name)
    finally:
        sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    return request.getfixturevalue(f"{request.param}_receiver")


def test_ready_with_status_and_mainpid(receiver: Receiver) -> None:
    n = receiver.notifier()
    assert n.enabled
    n.ready("listening on 127.0.0.1:8080")
    assert receiver.recv() == f"READY=1\nSTATUS=listening on 127.0.0.1:8080\nMAINPID={os.getpid()}"


def test_ready_without_status(receiver: Receiver) -> None:
    receiver.notifier().ready()
    assert receiver.recv() == f"READY=1\nMAINPID={os.getpid()}"


def test_each_message_is_exact(path_receiver: Receiver) -> None:
    n = path_receiver.notifier()
    n.status("logged in until 12:00")
    assert path_receiver.recv() == "STATUS=logged in until 12:00"
    n.watchdog()
    assert path_receiver.recv() == "WATCHDOG=1"
    n.stopping()
    assert path_receiver.recv() == "STOPPING=1"
    n.stopping("shutting down")
    assert path_receiver.recv() == "STOPPING=1\nSTATUS=shutting down"
    n.extend_timeout(5_000_000)
    assert path_receiver.recv() == "EXTEND_TIMEOUT_USEC=5000000"
    n.reloading()
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*", path_receiver.recv())


def test_status_is_one_line(path_receiver: Receiver) -> None:
    # A newline would start a new KEY=value assignment: e.g. a forged READY=1 or MAINPID=.
    path_receiver.notifier().status("waiting\nREADY=1\r\nMAINPID=1\0x")
    assert path_receiver.recv() == "STATUS=waiting READY=1  MAINPID=1 x"


def test_from_env_defaults_to_os_environ(
    path_receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier.from_env()
    assert n.enabled and n.watchdog_interval == 15.0
    n.watchdog()
    assert path_receiver.recv() == "WATCHDOG=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "200000"})
    assert not n.enabled
    assert n.watchdog_interval is None  # a watchdog without a socket to ping is meaningless
    assert n.send("READY=1") is False
    n.ready("x")
    n.status("x")
    n.watchdog()
    n.stopping("x")
    n.reloading()
    n.extend_timeout(1)
    asyncio.run(asyncio.wait_for(n.run_watchdog(lambda: True), timeout=1.0))


def test_unsupported_socket_form_disables() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).enabled
    assert not Notifier.from_env({"NOTIFY_SOCKET": "@"}).enabled


@pytest.mark.parametrize(
    ("extra", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
)
def test_watchdog_interval(path_receiver: Receiver, extra: dict[str, str], interval) -> None:
    assert path_receiver.notifier(**extra).watchdog_interval == interval


def test_watchdog_pid_mismatch_sends_nothing(path_receiver: Receiver) -> None:
    n = path_receiver.notifier(WATCHDOG_USEC="200000", WATCHDOG_PID=str(os.getpid() + 1))
    asyncio.run(asyncio.wait_for(n.run_watchdog(lambda: True), timeout=1.0))
    assert path_receiver.pending() == []
    n.ready()  # notifications other than the watchdog still go out
    assert path_receiver.recv().startswith("READY=1\n")


def test_send_errors_never_raise_and_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    missing = Path(tempfile.gettempdir()) / f"qn-missing-{secrets.token_hex(6)}"
    n = Notifier.from_env({"NOTIFY_SOCKET": str(missing)})
    assert n.enabled
    with caplog.at_level(logging.DEBUG, logger="qonic_proxy.sdnotify"):
        assert n.send("READY=1") is False
        n.ready("x")
        n.watchdog()
        n.stopping()
    records = [r for r in caplog.records if r.name == "qonic_proxy.sdnotify"]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG


async def _run_watchdog_scenario(receiver: Receiver) -> tuple[list[float], list[str]]:
    """Three healthy pings, then three unhealthy ticks, then healthy again."""
    loop = asyncio.get_running_loop()
    n = receiver.notifier(WATCHDOG_USEC="200000")
    assert n.watchdog_interval == 0.1
    state = {"healthy": True, "calls": 0}
    called = asyncio.Event()

    def healthy() -> bool:
        state["calls"] += 1
        called.set()
        return state["healthy"]

    receiver.sock.setblocking(False)
    task = asyncio.create_task(n.run_watchdog(healthy))
    try:
        stamps = []
        for _ in range(4):
            data = await asyncio.wait_for(loop.sock_recv(receiver.sock, 100), RECV_TIMEOUT)
            assert data == b"WATCHDOG=1"
            stamps.append(loop.time())

        state["healthy"] = False
        # Once healthy() has been asked three more times, every decision before the last one
        # has been acted upon (the send happens synchronously right after the call).
        start = state["calls"]
        while state["calls"] < start + 3:
            called.clear()
            await asyncio.wait_for(called.wait(), RECV_TIMEOUT)
        leftover = receiver.pending()
        # At most the ping decided just before the flip may still be queued.
        assert leftover in ([], ["WATCHDOG=1"])
        assert receiver.pending() == []

        state["healthy"] = True
        data = await asyncio.wait_for(loop.sock_recv(receiver.sock, 100), RECV_TIMEOUT)
        assert data == b"WATCHDOG=1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return gaps, leftover


def test_run_watchdog_pings_at_half_interval_and_pauses_while_unhealthy(
    receiver: Receiver,
) -> None:
    gaps, _ = asyncio.run(_run_watchdog_scenario(receiver))
    # Never faster than WATCHDOG_USEC/2 (0.1 s), and clearly not at the full 0.2 s.
    assert min(gaps) >= 0.09, gaps
    assert statistics.median(gaps) < 0.18, gaps


def test_run_watchdog_treats_a_raising_health_check_as_unhealthy(
    path_receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    n = path_receiver.notifier(WATCHDOG_USEC="200000")
    calls = 0

    def broken() -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    async def scenario() -> None:
        task = asyncio.create_task(n.run_watchdog(broken))
        try:
            while calls < 3:
                await asyncio.sleep(0.02)  # polling a counter the task advances every 0.1 s
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.WARNING, logger="qonic_proxy.sdnotify"):
        asyncio.run(asyncio.wait_for(scenario(), timeout=5.0))
    assert path_receiver.pending() == []
    warnings = [r for r in caplog.records if r.name == "qonic_proxy.sdnotify"]
    assert len(warnings) == 1  # once per streak, not every tick
