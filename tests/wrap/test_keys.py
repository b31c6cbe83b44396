"""End-to-end: `exec --read-only`, `env --read-only` and the keys the daemon mints for children
(issue 11 point 3, issue 13 point 2), with the real daemon, curl and urllib."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from qonic_proxy.ports import free_port
from tests.wrap.exec_world import TIMEOUT, World, echo_ok, running_daemon

pytestmark = pytest.mark.e2e

# GET, then POST, each through the reverse URL and through the forward proxy; prints the codes
READ_AND_WRITE = """
curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 "$QONIC_API_URL/echo"
curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 {api}/v1/echo
curl -s -o {body} -w '%{{http_code}}\\n' --max-time 20 -X POST -d x=1 "$QONIC_API_URL/echo"
curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 -X DELETE {api}/v1/echo
python3 -c 'import urllib.request as u
r = u.Request("{api}/v1/echo", data=b"x", method="PUT")  # forward: HTTPS_PROXY
try: u.urlopen(r, timeout=20)
except u.HTTPError as e: print(e.code)'
"""


def read_and_write(world: World) -> str:
    return READ_AND_WRITE.format(api=world.api, body=world.tmp / "post.json")


def api_ok(world: World) -> int:
    return int(world.sandbox.stats()["api"]["ok"])


def with_key_file(world: World, name: str) -> tuple[Path, str]:
    config = world.write_config(name, forward_port=free_port())
    key_file = world.tmp / f"{name}.key"
    key = "configured-" + "k" * 30
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    text = config.read_text().replace("[proxy]\n", f'[proxy]\nclient_key_file = "{key_file}"\n')
    config.write_text(text)
    return config, key


def daemon_config(world: World, name: str) -> Path:
    return world.write_config(name, forward_port=free_port())


def check_read_only(world: World, result: subprocess.CompletedProcess[str], before: int) -> None:
    assert result.returncode == 0, result.stderr
    get_reverse, get_forward, post_code, delete, put = result.stdout.strip().split("\n")
    assert (get_reverse, get_forward) == ("200", "200")
    assert (post_code, delete, put) == ("403", "403", "403")
    assert json.loads((world.tmp / "post.json").read_text())["error"] == "read_only"
    assert api_ok(world) == before + 2  # only the two GETs reached the API


@pytest.mark.parametrize("daemon", ["private", "running"])
def test_exec_read_only_lets_children_only_read_in_both_modes(world: World, daemon: str) -> None:
    with contextlib.ExitStack() as stack:
        config = world.config
        if daemon == "running":
            config = daemon_config(world, "ro-running.toml")
            stack.enter_context(running_daemon(world, config))
        before = api_ok(world)
        result = world.cli("exec", "--read-only", "--", "sh", "-c",
                           read_and_write(world), config=config)
        check_read_only(world, result, before)


def test_a_private_read_only_proxy_refuses_writes_even_without_the_key(world: World) -> None:
    """The private proxy serves this child only: it limits our own account, key or no key."""
    keyless = """
        reverse=$(echo "$QONIC_API_URL" | sed 's|//[^@]*@|//|')
        curl -s -o /dev/null -w '%{http_code}\\n' --max-time 20 -X POST "$reverse/echo"
        curl -s -o /dev/null -w '%{http_code}\\n' --max-time 20 "$reverse/echo"
        """
    result = world.cli("exec", "--read-only", "--", "sh", "-c", keyless)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["403", "200"]


def test_exec_without_narrowing_hands_out_no_key(world: World) -> None:
    config = daemon_config(world, "nokey.toml")
    with running_daemon(world, config):
        result = world.exec("sh", "-c", 'echo "$QONIC_API_URL $HTTPS_PROXY"', config=config)
    assert result.returncode == 0, result.stderr
    assert "@" not in result.stdout and "qpk." not in result.stdout


def minted_from(url: str) -> str:
    key = unquote(urlsplit(url).password or "")
    assert key.startswith("qpk."), url
    return key


def curl_with(world: World, config: Path, key: str, path: str = "/v1/echo") -> str:
    port = [line for line in config.read_text().splitlines() if line.startswith("port =")][0]
    url = f"http://127.0.0.1:{port.split('=')[1].strip()}{path}"
    return subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy",
                           "*", "--max-time", "20", "-H", f"X-Qonic-Proxy-Key: {key}", url],
                          capture_output=True, text=True, timeout=TIMEOUT).stdout


def test_exec_gives_a_minted_key_never_the_configured_one_and_revokes_it(world: World) -> None:
    config, configured = with_key_file(world, "keyed.toml")
    seen = world.tmp / "keyed-env.txt"
    with running_daemon(world, config):
        result = world.exec("sh", "-c", f"""
            env > {seen}
            curl -sf --max-time 20 "$QONIC_API_URL/echo" && echo &&
            curl -sf --max-time 20 {world.api}/v1/echo""", config=config)
        assert result.returncode == 0, result.stderr
        reverse_echo, forward_echo = result.stdout.strip().splitlines()
        assert echo_ok(reverse_echo) and echo_ok(forward_echo)
        environment = seen.read_text()
        assert configured not in environment  # nor quoted: it has no characters to quote
        key = minted_from(next(line.split("=", 1)[1] for line in environment.splitlines()
                               if line.startswith("QONIC_API_URL=")))
        assert curl_with(world, config, key) == "401"  # exec ended: the key is dead
        assert curl_with(world, config, configured) == "200"


@contextlib.contextmanager
def started_exec(world: World, config: Path, seen: Path, *options: str,
                 ) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "qonic_proxy", "exec", "--config", str(config), *options, "--",
         "sh", "-c", f'echo "$QONIC_API_URL" > {seen}.tmp && mv {seen}.tmp {seen}; sleep 60'],
        env=world.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not seen.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # exec and the sh it started (its session)
        proc.wait(10)


def wait_for_status(world: World, config: Path, key: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while (got := curl_with(world, config, key)) != status:
        assert time.monotonic() < deadline, f"still {got}"
        time.sleep(0.1)


def test_a_sigkilled_exec_takes_its_key_with_it(world: World) -> None:
    config, _ = with_key_file(world, "killed.toml")
    seen = world.tmp / "killed-url.txt"
    with running_daemon(world, config), started_exec(world, config, seen) as proc:
        key = minted_from(seen.read_text().strip())
        assert curl_with(world, config, key) == "200"  # alive while exec lives
        os.kill(proc.pid, signal.SIGKILL)  # exec only: its child sleeps on
        wait_for_status(world, config, key, "401")


def shell_with_env(world: World, config: Path, script: str, *options: str,
                   ) -> subprocess.CompletedProcess[str]:
    env_verb = (f"{sys.executable} -m qonic_proxy env --config {config} {' '.join(options)}")
    return subprocess.run(["bash", "-c", f'eval "$({env_verb})" && {script}'], env=world.env(),
                          capture_output=True, text=True, timeout=TIMEOUT,
                          start_new_session=True, check=False)


def test_env_read_only_is_tied_to_the_evaluating_shell(world: World) -> None:
    config = daemon_config(world, "env-ro.toml")
    seen = world.tmp / "env-ro-url.txt"
    with running_daemon(world, config):
        before = api_ok(world)
        result = shell_with_env(world, config, f'echo "$QONIC_API_URL" > {seen}\n' +
                                read_and_write(world), "--read-only")
        check_read_only(world, result, before)
        key = minted_from(seen.read_text().strip())
        wait_for_status(world, config, key, "401")  # the shell is gone: so is its key


def test_env_unset_revokes_the_shells_key(world: World) -> None:
    config, _ = with_key_file(world, "env-keyed.toml")
    seen = world.tmp / "env-keyed.txt"
    with running_daemon(world, config):
        result = shell_with_env(world, config, f"""
            echo "$QONIC_API_URL" > {seen}
            curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 "$QONIC_API_URL/echo"
            eval "$({sys.executable} -m qonic_proxy env --config {config} --unset)"
            curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 20 \
                -H "X-Qonic-Proxy-Key: $(cat {seen} | sed 's/.*qonic:\\([^@]*\\)@.*/\\1/')" \
                "$(cat {seen})/echo"
            """)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["200", "401"]
