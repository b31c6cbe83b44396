"""`exec` with a running daemon (used, or passed over) and with no token yet (login first)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qonic_proxy.config.loader import load_config
from qonic_proxy.errors import LoginError
from qonic_proxy.wrap.daemon_link import proxy_for, running_endpoints, wait_until
from qonic_proxy.wrap.environment import Endpoints
from tests.cli.fake_daemon import fake_daemon, health_answer
from tests.cli.helpers import write_config
from tests.wrap.exec_world import TIMEOUT, World, echo_ok, free_port, running_daemon


def test_uses_the_running_daemon(world: World) -> None:
    port, forward = free_port(), free_port()
    config = world.write_config("running.toml", port=port, forward_port=forward)
    with running_daemon(world, config):
        result = world.exec("sh", "-c", f"""
            echo "$HTTPS_PROXY $QONIC_API_URL" &&
            curl -sf --max-time 20 {world.api}/v1/echo""", config=config)
    assert result.returncode == 0, result.stderr
    proxies, echo = result.stdout.splitlines()
    assert proxies == f"http://127.0.0.1:{forward} http://127.0.0.1:{port}/v1"
    assert echo_ok(echo)


def test_running_daemon_without_forward_mode_gets_a_private_proxy(world: World) -> None:
    port = free_port()
    config = world.write_config("reverse-only.toml", port=port, forward_port=0)
    with running_daemon(world, config):
        result = world.exec("sh", "-c", f"""
            echo "$QONIC_API_URL" && curl -sf --max-time 20 {world.api}/v1/echo""",
            config=config)
    assert result.returncode == 0, result.stderr
    api_url, echo = result.stdout.splitlines()
    assert api_url != f"http://127.0.0.1:{port}/v1"  # a private proxy, with forward mode
    assert echo_ok(echo)


def test_exec_logs_in_first_when_no_token_is_cached(world: World) -> None:
    config = world.write_config("fresh.toml", cache="fresh/token.json")
    before = world.sandbox.stats()["token"]["authorization_code"]["ok"]
    result = world.exec("sh", "-c", 'curl -sf --max-time 20 "$QONIC_API_URL/echo"',
                        config=config)
    assert result.returncode == 0, result.stderr
    assert echo_ok(result.stdout)
    assert "waiting up to 30 s for the Qonic login" in result.stderr
    assert world.sandbox.stats()["token"]["authorization_code"]["ok"] == before + 1
    assert (world.tmp / "fresh" / "token.json").is_file()


def test_failed_login_does_not_start_the_command(world: World) -> None:
    config = world.write_config("denied.toml", cache="denied/token.json")
    marker = world.tmp / "denied-ran"
    env = world.env(QONIC_CLIENT_SECRET="wrong-secret")  # the token endpoint refuses us
    result = world.exec("touch", str(marker), config=config, env=env)
    assert result.returncode == 1
    assert not marker.exists()
    assert "the command was not started" in result.stderr
    assert "wrong-secret" not in result.stderr


def test_signal_while_waiting_for_login_aborts_without_running_the_command(world: World) -> None:
    config = world.write_config("waiting.toml", cache="waiting/token.json")
    marker = world.tmp / "waiting-ran"
    argv = [sys.executable, "-m", "qonic_proxy", "exec", "--config", str(config), "--",
            "touch", str(marker)]
    env = world.env(BROWSER="/bin/true")  # a browser that never logs in
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "waiting up to 30 s for the Qonic login" in line
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 128 + signal.SIGTERM
        assert not marker.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# ----- units -------------------------------------------------------------------------------------
def test_running_endpoints_only_for_our_daemon_with_forward_mode(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, port=8080))
    ours = health_answer("https://api.qonic.com", 8080, forward_port=8081)
    assert running_endpoints(cfg, ours) == Endpoints("http://127.0.0.1:8080",
                                                     "http://127.0.0.1:8081")
    assert running_endpoints(cfg, {**ours, "api_url": "https://other.example"}) is None
    assert running_endpoints(cfg, health_answer("https://api.qonic.com", 8080,
                                                forward_port=None)) is None
    assert running_endpoints(cfg, {"status": "ok"}) is None  # something else on our port
    assert running_endpoints(cfg, {**ours, "listeners": "garbage"}) is None
    forward = ours["listeners"]["forward"]
    bad_reverse = {**ours, "listeners": {"reverse": "http://[", "forward": forward}}
    assert running_endpoints(cfg, bad_reverse) == Endpoints("http://127.0.0.1:8080",
                                                            "http://127.0.0.1:8081")


def test_wait_until_returns_on_abort_and_fails_after_the_timeout() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        aborted: asyncio.Future[int] = loop.create_future()

        async def never() -> bool:
            return False

        with pytest.raises(LoginError, match=r"no luck after 0\.05 s; the command was not st"):
            await wait_until(never, 0.05, aborted, "no luck")
        loop.call_later(0.05, aborted.set_result, 15)
        await wait_until(never, 30, aborted, "no luck")  # returns: the caller checks `aborted`

        calls: list[int] = []

        async def third_time() -> bool:
            calls.append(1)
            return len(calls) == 3

        await wait_until(third_time, 30, loop.create_future(), "no luck")
        assert len(calls) == 3

    asyncio.run(scenario())


def test_proxy_for_uses_a_logged_in_running_daemon(tmp_path: Path) -> None:
    with fake_daemon() as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        daemon.health.update(health_answer("https://api.qonic.com", daemon.port,
                                           forward_port=daemon.port))

        async def scenario() -> Endpoints:
            async with proxy_for(cfg, asyncio.get_running_loop().create_future()) as endpoints:
                return endpoints

        assert asyncio.run(scenario()) == Endpoints(daemon.url, daemon.url)
