"""Tests for qonic_proxy.access.minted_keys: keys that live exactly as long as a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from qonic_proxy.access import minted_keys
from qonic_proxy.access.minted_keys import PREFIX, MintedKeys, MintError, process_uid

ME = os.geteuid()


@contextlib.contextmanager
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process to tie keys to; killed and reaped, by its pid, at the end."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        yield child
    finally:
        child.kill()
        child.wait(10)


async def until_revoked(keys: MintedKeys, key_id: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while keys.get(key_id) is not None:
        assert loop.time() < deadline, "the key outlived its process"
        await asyncio.sleep(0.02)


def test_a_key_is_found_by_its_secret_only_and_revoked() -> None:
    async def scenario() -> None:
        keys = MintedKeys()
        key, grant = keys.mint(ME, os.getpid(), read_only=True)
        assert key.startswith(PREFIX + grant.key_id + ".") and len(key) > 50
        assert keys.find(key) is grant and grant.uid == ME and grant.read_only
        assert keys.find(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert keys.find(f"{PREFIX}{grant.key_id}.") is None and keys.find("other") is None
        assert grant.key_id in repr(grant) and key.split(".")[2] not in repr(grant)
        assert keys.revoke(grant.key_id) and grant.revoked and keys.find(key) is None
        assert not keys.revoke(grant.key_id)
    asyncio.run(scenario())


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_key_dies_with_its_process(how: signal.Signals) -> None:
    async def scenario() -> None:
        keys = MintedKeys()
        with sleeper() as child:
            key, grant = keys.mint(ME, child.pid, read_only=False)
            await asyncio.sleep(0.1)
            assert keys.find(key) is grant  # alive while the process lives
            child.send_signal(how)
            await until_revoked(keys, grant.key_id)
            assert keys.find(key) is None and grant.revoked
    asyncio.run(scenario())


def test_without_pidfd_the_process_is_polled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    monkeypatch.setattr(minted_keys, "POLL_EVERY", 0.05)

    async def scenario() -> None:
        keys = MintedKeys()
        with sleeper() as child:
            key, grant = keys.mint(ME, child.pid, read_only=False)
            await asyncio.sleep(0.2)
            assert keys.find(key) is grant
            child.kill()
            child.wait(10)  # reaped: the pid is gone
            await until_revoked(keys, grant.key_id)
    asyncio.run(scenario())


def test_a_key_cannot_be_tied_to_another_accounts_process() -> None:
    async def scenario() -> None:
        keys = MintedKeys()
        stranger = ME + 12345 if ME else 4242
        with pytest.raises(MintError) as caught:
            keys.mint(stranger, os.getpid(), read_only=False)
        assert caught.value.status == 403 and "your own" in str(caught.value)
        assert len(keys) == 0
        with pytest.raises(MintError) as caught:
            keys.mint(ME, 1, read_only=False)
        assert caught.value.status == 400
        with pytest.raises(MintError) as missing:
            keys.mint(ME, 2**22 + 12345, read_only=False)  # above pid_max: no such process
        assert missing.value.status == 400
    asyncio.run(scenario())


def test_a_process_proc_hides_can_be_tied_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ProtectProc=invisible the service cannot read another account's /proc entry: the
    key is still minted (it stays bound to its account), and a readable foreign owner is not."""
    async def scenario() -> None:
        keys = MintedKeys()
        stranger = ME + 12345 if ME else 4242
        monkeypatch.setattr(minted_keys, "process_uid", lambda pid: None)
        key, grant = keys.mint(stranger, os.getpid(), read_only=True)
        assert grant.uid == stranger and keys.find(key) is grant
        monkeypatch.setattr(minted_keys, "process_uid", lambda pid: ME)
        with pytest.raises(MintError):
            keys.mint(stranger, os.getpid(), read_only=True)
        keys.close()
    asyncio.run(scenario())


def test_the_number_of_live_keys_is_bounded() -> None:
    async def scenario() -> None:
        keys = MintedKeys(limit=2)
        keys.mint(ME, os.getpid(), read_only=False)
        keys.mint(ME, os.getpid(), read_only=False)
        with pytest.raises(MintError) as caught:
            keys.mint(ME, os.getpid(), read_only=False)
        assert caught.value.status == 503
        keys.close()
        assert len(keys) == 0
    asyncio.run(scenario())


def test_process_uid_reads_the_real_uid() -> None:
    assert process_uid(os.getpid()) == os.getuid()
    assert process_uid(2**22 + 12345) is None
