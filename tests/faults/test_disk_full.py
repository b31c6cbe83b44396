"""Issue 10: a token cache that cannot be written must not lose (or spend twice) the newest tokens.

The cache folder is a 64 KiB tmpfs in the daemon's private mount namespace. We fill it (or make it
read-only); refreshes still succeed at the sandbox, requests keep working on the tokens held in
memory, /-/health says the cache is not saved and why, the next refresh spends the newest refresh
token (no reuse at the sandbox), and once the disk is writable again the cache is written without
any user action. A restart on that file then serves without a login.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.isolation import fill, free, in_namespace, private_tmpfs, remount
from tests.faults.support import assert_no_login_lost, assert_restart_serves, call
from tests.harness import DaemonProcess, World, wait_for

pytestmark = pytest.mark.e2e


def refreshes(world: World) -> int:
    return world.sandbox.stats()["token"]["refresh_token"]["ok"]


def cache_state(daemon: DaemonProcess) -> dict:
    return daemon.health()[1]["cache"]


def test_namespace_helper_mounts_a_private_tmpfs(world: World,
                                                 daemons: list[DaemonProcess]) -> None:
    folder = world.cache_file.parent
    daemon = world.daemon(prefix=private_tmpfs(folder))
    daemons.append(daemon)
    daemon.wait_ready()
    inside = in_namespace(daemon.proc.pid, "df", "--output=fstype,size", str(folder)).stdout
    assert "tmpfs" in inside and "64" in inside
    assert not world.cache_file.exists()  # the host never sees the daemon's tmpfs
    fill(daemon.proc.pid, folder)
    df = in_namespace(daemon.proc.pid, "df", "--output=avail", str(folder)).stdout.split()
    assert df[-1] == "0"
    free(daemon.proc.pid, folder)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_unwritable_cache_keeps_serving_and_saves_later(
        world: World, daemons: list[DaemonProcess], fault: str) -> None:
    folder = world.cache_file.parent
    daemon = world.daemon(prefix=private_tmpfs(folder))
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    pid = daemon.proc.pid
    assert cache_state(daemon)["saved"] is True
    breaks: Callable[[], None] = (lambda: fill(pid, folder)) if fault == "full" else (
        lambda: remount(pid, folder, "ro"))
    mends: Callable[[], None] = (lambda: free(pid, folder)) if fault == "full" else (
        lambda: remount(pid, folder, "rw"))
    breaks()
    before = refreshes(world)
    wait_for(lambda: refreshes(world) >= before + 2, 25, "two refreshes with the disk broken")
    for _ in range(3):
        assert call(daemon).status == 200
        time.sleep(0.3)
    cache = cache_state(daemon)
    assert cache["saved"] is False and cache["error"], cache
    assert cache["path"] == str(world.cache_file)
    stats = world.sandbox.stats()
    assert stats["refresh_token_reused"] == 0 and stats["token"]["refresh_token"]["error"] == 0
    assert daemon.stderr_text().count("cannot write the token cache") == 1  # logged once
    mends()
    wait_for(lambda: cache_state(daemon)["saved"] is True, 15, "the cache to be saved again")
    assert "saved the token cache" in daemon.stderr_text()
    # The restart (outside the namespace) starts from the file the daemon wrote in it.
    world.cache_file.parent.mkdir(parents=True, exist_ok=True)
    world.cache_file.write_text(in_namespace(pid, "cat", str(world.cache_file)).stdout)
    world.cache_file.chmod(0o600)
    assert_no_login_lost(world, daemon)
    assert_restart_serves(world, daemons, daemon)
