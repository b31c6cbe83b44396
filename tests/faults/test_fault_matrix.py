"""Issue 10's fault matrix, each with the real daemon against the sandbox: the API host down and
back, a reset in the middle of a streamed download, kill -9 during a save, and wall-clock jumps.

(The cache file's atomic replacement under SIGKILL in the middle of a write is proven at the
store level in tests/proxy/test_security.py (test_cache_replace_is_atomic_even_when_killed_mid_
write); here the whole daemon is killed while it refreshes and saves.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from qonic_proxy.config.loader import load_config
from qonic_proxy.tokens.store import TokenStore, cache_key
from tests.faults.isolation import FakeWallClock
from tests.faults.relay import Relay
from tests.faults.support import assert_no_login_lost, assert_restart_serves, call, error_of
from tests.harness import DaemonProcess, World, http_request, wait_for

pytestmark = pytest.mark.e2e


def start(world: World, daemons: list[DaemonProcess], **kw: object) -> DaemonProcess:
    daemon = world.daemon(**kw)  # type: ignore[arg-type]
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    return daemon


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_api_down_and_back_without_restart(world: World, daemons: list[DaemonProcess]) -> None:
    parts = urlsplit(world.sandbox.url)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 443))
    relay.up()
    try:
        world.config["qonic"]["api_url"] = f"https://127.0.0.1:{relay.port}"
        daemon = start(world, daemons)
        assert call(daemon).status == 200
        relay.down()
        for _ in range(3):
            down = call(daemon)
            assert down.status == 502 and error_of(down) == "upstream_error"
            assert down.headers["Content-Type"] == "application/json"
        relay.up()
        wait_for(lambda: call(daemon).status == 200, 15, "service after the API came back")
        assert daemon.proc.poll() is None
        assert_no_login_lost(world, daemon)
    finally:
        relay.down()


def test_reset_mid_stream_is_a_clean_client_error(world: World,
                                                  daemons: list[DaemonProcess]) -> None:
    world.sandbox.set_access_token_lifetime(600)
    daemon = start(world, daemons)
    path = "/v1/projects/p/models/m/download?size=200000000&reset_after=150000000"
    baseline = None
    for _ in range(3):
        with pytest.raises(Exception) as info:  # noqa: PT011 (urllib: IncompleteRead or reset)
            status, _, body = http_request(daemon.reverse_url + path, timeout=60)
            assert status != 200 or len(body) == 200000000
            raise AssertionError(f"no error: {status} {len(body)}")
        assert not isinstance(info.value, AssertionError), info.value
        assert daemon.proc.poll() is None
        assert call(daemon).status == 200
        baseline = baseline or rss_kib(daemon.proc.pid)
    assert rss_kib(daemon.proc.pid) - (baseline or 0) < 64 * 1024  # no body kept in memory
    assert daemon.health()[0] == 200


def test_kill_9_while_refreshing_leaves_a_whole_cache(world: World,
                                                      daemons: list[DaemonProcess]) -> None:
    daemon = start(world, daemons)
    store = TokenStore(world.cache_file, cache_key(load_config(world.config_path)))
    first = store.load()
    assert first is not None
    wait_for(lambda: (t := store.load()) is not None and t.refresh_token != first.refresh_token,
             20, "a refresh saved by the daemon")
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(10)
    loaded = store.load()
    assert loaded is not None and loaded.access_token  # old or new, never partial
    assert_restart_serves(world, daemons, daemon)


def test_wall_clock_jumps_forwards_and_backwards(world: World, tmp_path: Path,
                                                 daemons: list[DaemonProcess]) -> None:
    clock = FakeWallClock(tmp_path)
    world.sandbox.set_access_token_lifetime(60)
    daemon = start(world, daemons, env=world.env(**clock.env()))
    assert call(daemon).status == 200
    stats = world.sandbox.stats()
    clock.jump(3600)  # suspend/resume: the held token now looks expired
    assert call(daemon).status == 200
    after = world.sandbox.stats()
    assert after["token"]["refresh_token"]["ok"] == stats["token"]["refresh_token"]["ok"] + 1
    assert after["api"]["unauthorized"] == stats["api"]["unauthorized"]  # no stale token sent
    clock.jump(-7200)  # an hour behind real time: the held token looks fresh for an hour more
    assert call(daemon).status == 200  # still works
    world.sandbox.revoke_access_tokens()  # ...until Qonic says 401 to it
    assert call(daemon).status == 200  # refreshed after the 401, request replayed
    final = world.sandbox.stats()
    assert final["api"]["unauthorized"] == after["api"]["unauthorized"] + 1
    assert final["token"]["refresh_token"]["ok"] == after["token"]["refresh_token"]["ok"] + 1
    assert_no_login_lost(world, daemon)
    assert_restart_serves(world, daemons, daemon)
