"""Tests for qonic_proxy.runtime_file: one lock and one record per config, never stale."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qonic_proxy.config.loader import load_config
from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.records import replace
from qonic_proxy.runtime_file import DaemonRecord, RuntimeFile, record_for
from tests.cli.helpers import write_config


def config(tmp_path: Path, name: str = "a") -> Config:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return load_config(write_config(folder), {})


def record(cfg: Config, port: int = 4321) -> DaemonRecord:
    return record_for(cfg, "https://api.qonic.com", f"http://127.0.0.1:{port}", port, None, 0)


def test_claim_write_read_release(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    runtime = RuntimeFile(cfg)
    runtime.claim()
    assert runtime.read() is None  # claimed, listeners not bound yet
    runtime.write(record(cfg))
    assert stat.S_IMODE(runtime.path.stat().st_mode) == 0o600
    found = RuntimeFile(cfg).read()
    assert found is not None and (found.pid, found.reverse_port) == (os.getpid(), 4321)
    assert found.config == str(cfg.path)
    runtime.release()
    assert not runtime.path.exists() and RuntimeFile(cfg).read() is None


def test_a_second_claim_names_the_running_daemon(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    first = RuntimeFile(cfg)
    first.claim()
    first.write(record(cfg, 5555))
    try:
        with pytest.raises(QonicProxyError) as info:
            RuntimeFile(cfg).claim()
        message = str(info.value)
        assert message.startswith(f"qonic-proxy is already running for this config {cfg.path} "
                                  f"(pid {os.getpid()}, http://127.0.0.1:5555); ")
        assert info.value.exit_code == 1
    finally:
        first.release()
    second = RuntimeFile(cfg)
    second.claim()  # free again
    second.release()


def test_another_config_has_its_own_file(tmp_path: Path) -> None:
    a, b = config(tmp_path, "a"), config(tmp_path, "b")
    b = replace(b, token=a.token)  # even with a shared cache folder
    runtime = RuntimeFile(a)
    runtime.claim()
    runtime.write(record(a))
    try:
        assert RuntimeFile(b).read() is None
        other = RuntimeFile(b)
        other.claim()
        other.release()
    finally:
        runtime.release()


def test_a_dead_daemons_record_is_ignored_and_replaced(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    runtime = RuntimeFile(cfg)
    runtime.path.parent.mkdir(parents=True, exist_ok=True)
    stale = replace(record(cfg), pid=int(dead.stdout))
    runtime.path.write_bytes(stale.to_json())
    runtime.path.chmod(0o600)
    assert RuntimeFile(cfg).read() is None
    runtime.claim()  # no one holds the lock: the stale record goes
    assert not runtime.path.exists()
    runtime.release()


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"pid": "1"}', b"x" * 5000])
def test_a_damaged_record_is_ignored(tmp_path: Path, content: bytes) -> None:
    cfg = config(tmp_path)
    runtime = RuntimeFile(cfg)
    runtime.path.parent.mkdir(parents=True, exist_ok=True)
    runtime.path.write_bytes(content)
    runtime.path.chmod(0o600)
    assert runtime.read() is None


def test_a_loose_record_is_not_trusted(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    runtime = RuntimeFile(cfg)
    runtime.path.parent.mkdir(parents=True, exist_ok=True)
    runtime.path.write_bytes(record(cfg).to_json())
    runtime.path.chmod(0o666)
    assert runtime.read() is None


def test_the_same_file_with_other_ports_is_another_config(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    moved = replace(cfg, proxy=replace(cfg.proxy, forward_port=1234))
    first = RuntimeFile(cfg)
    first.claim()
    try:
        other = RuntimeFile(moved)
        other.claim()
        other.release()
    finally:
        first.release()


def test_read_owned_names_the_account_of_a_live_record(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    runtime = RuntimeFile(cfg)
    runtime.claim()
    try:
        assert runtime.read_owned() is None
        runtime.write(record(cfg))
        found = RuntimeFile(cfg).read_owned()
        assert found is not None and found[1] == os.getuid() and found[0].reverse_port == 4321
        runtime.path.chmod(0o622)  # writable by others: anyone may have written it
        assert runtime.read_owned() is None
        runtime.path.chmod(0o644)  # readable is fine: nothing in it is secret
        assert runtime.read_owned() is not None
        runtime.path.parent.chmod(0o773)  # others may have put it there
        assert runtime.read_owned() is None
        runtime.path.parent.chmod(0o700)
        dead = replace(record(cfg), pid=2**22 + 12345)
        runtime.path.write_bytes(dead.to_json())
        assert runtime.read_owned() is None  # no such process any more
    finally:
        runtime.release()


def test_read_owned_believes_another_accounts_record_only_for_its_own_process(
        tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: hands the runtime file to another account")
    cfg = config(tmp_path)
    runtime = RuntimeFile(cfg)
    runtime.claim()
    try:
        nobody = 65534
        child = subprocess.Popen(["sleep", "30"], user=nobody, group=nobody)
        try:
            for pid, believed in ((child.pid, True), (os.getpid(), False)):
                runtime.write(replace(record(cfg), pid=pid))
                os.chown(runtime.path, nobody, -1)
                found = runtime.read_owned()
                assert (found is not None) is believed, pid
                assert found is None or (found[0].pid, found[1]) == (pid, nobody)
                os.chown(runtime.path.parent, nobody, -1)  # a service's own state folder
                assert (runtime.read_owned() is not None) is believed
                os.chown(runtime.path.parent, 0, -1)
        finally:
            child.kill()
            child.wait(10)
    finally:
        runtime.release()
