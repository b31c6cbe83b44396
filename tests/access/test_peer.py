"""Tests for qonic_proxy.access.peer: the uid behind a loopback connection, both lookups."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from qonic_proxy.access import peer
from tests.access.accounts import need_root

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="Linux only")


@contextmanager
def connection(family: socket.AddressFamily, host: str,
               connect_to: str | None = None) -> Iterator[socket.socket]:
    """The accepted end of a loopback connection we opened ourselves."""
    server = socket.socket(family)
    server.bind((host, 0))
    server.listen()
    client = socket.create_connection((connect_to or host, server.getsockname()[1]))
    accepted, _ = server.accept()
    try:
        yield accepted
    finally:
        for sock in (accepted, client, server):
            sock.close()


def has_ipv6() -> bool:
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        return False
    return True


CASES = [(socket.AF_INET, "127.0.0.1", None)]
if has_ipv6():
    CASES += [(socket.AF_INET6, "::1", None), (socket.AF_INET6, "::", "127.0.0.1")]


@pytest.mark.parametrize(("family", "host", "connect_to"), CASES)
@pytest.mark.parametrize("lookup", ["sock_diag", "proc"])
def test_own_connections_are_ours(family: socket.AddressFamily, host: str,
                                  connect_to: str | None, lookup: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if lookup == "proc":
        def no_netlink(*_: object) -> None:
            raise OSError(97, "no netlink here")
        monkeypatch.setattr(peer, "_sock_diag", no_netlink)
    with connection(family, host, connect_to) as accepted:
        assert peer.socket_peer_uid(accepted) == os.geteuid()


def test_a_vanished_peer_is_unidentified() -> None:
    assert peer.peer_uid(("127.0.0.1", 1), ("127.0.0.1", 2)) is None
    assert peer._scan(peer.PROC_TCP, " 0100007F:0002 0100007F:0001 ") is None


def test_non_loopback_and_other_systems_are_unidentified(monkeypatch: pytest.MonkeyPatch) -> None:
    assert peer.peer_uid(("192.0.2.1", 80), ("192.0.2.7", 5000)) is None
    assert peer.peer_uid(("127.0.0.1", 80), ("not an address", 5000)) is None
    monkeypatch.setattr(peer.sys, "platform", "darwin")
    with connection(socket.AF_INET, "127.0.0.1") as accepted:
        assert peer.socket_peer_uid(accepted) is None


@pytest.mark.parametrize("lookup", ["sock_diag", "proc"])
def test_another_account_is_told_apart(lookup: str, monkeypatch: pytest.MonkeyPatch) -> None:
    need_root()
    if lookup == "proc":
        monkeypatch.setattr(peer, "_sock_diag", lambda *_: (_ for _ in ()).throw(OSError()))
    nobody = 65534
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    script = f"import socket,sys;c=socket.create_connection(('127.0.0.1',{port}));sys.stdin.read()"
    child = subprocess.Popen(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", script],
                             stdin=subprocess.PIPE)
    try:
        server.settimeout(20)
        accepted, _ = server.accept()
        assert peer.socket_peer_uid(accepted) == nobody
        accepted.close()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
        server.close()


def test_the_overflow_uid_of_a_user_namespace_is_unidentified(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under PrivateUsers= every unmapped account (root too) shows as 65534: no one."""
    monkeypatch.setattr(peer, "_sock_diag", lambda *_: 65534)
    monkeypatch.setattr(peer, "unmapped_uid", lambda: 65534)
    assert peer.peer_uid(("127.0.0.1", 8080), ("127.0.0.1", 40000)) is None
    monkeypatch.setattr(peer, "unmapped_uid", lambda: None)  # the initial namespace: real nobody
    assert peer.peer_uid(("127.0.0.1", 8080), ("127.0.0.1", 40000)) == 65534


def test_the_initial_user_namespace_has_no_unmapped_uid() -> None:
    with open("/proc/self/uid_map") as mapping:
        initial = mapping.read().split() == ["0", "0", "4294967295"]
    peer.unmapped_uid.cache_clear()
    assert (peer.unmapped_uid() is None) == initial


@pytest.mark.parametrize(("family", "host", "connect_to"), CASES)
def test_the_listener_we_reached_is_our_own(family: socket.AddressFamily, host: str,
                                            connect_to: str | None) -> None:
    server = socket.socket(family)
    server.bind((host, 0))
    server.listen()
    try:
        with socket.create_connection((connect_to or host, server.getsockname()[1])) as client:
            assert peer.listener_uid(client) == os.getuid()  # before the server accepted it
    finally:
        server.close()


@pytest.mark.parametrize("lookup", ["sock_diag", "proc"])
def test_the_listener_of_another_account_is_told_apart(lookup: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    need_root()
    if lookup == "proc":
        monkeypatch.setattr(peer, "_sock_diag", lambda *_: (_ for _ in ()).throw(OSError()))
    script = ("import socket,sys;s=socket.socket();s.bind(('127.0.0.1',0));s.listen();"
              "print(s.getsockname()[1],flush=True);sys.stdin.read()")
    child = subprocess.Popen(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", script],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            assert peer.listener_uid(client) == 65534  # it never called accept()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
