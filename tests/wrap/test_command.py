"""`qonic-proxy exec` end to end: real clients through the proxy, exit codes, signals."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qonic_proxy.config.loader import load_config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.wrap.command import (
    CommandError,
    SpawnedChild,
    exit_code,
    resolve_program,
    run_command,
)
from tests.cli.helpers import write_config
from tests.wrap.exec_world import TIMEOUT, World, echo_ok, free_port, running_daemon


# ----- clients --------------------------------------------------------------------------------
def test_curl_via_reverse_url_and_via_forward_proxy(world: World) -> None:
    result = world.exec("sh", "-c", f"""
        curl -sf --max-time 20 "$QONIC_API_URL/projects" && echo &&
        curl -sf --max-time 20 "$QONIC_API_URL/echo" && echo &&
        curl -sf --max-time 20 -w '\\n%{{http_connect}}\\n' {world.api}/v1/echo
    """)
    assert result.returncode == 0, result.stderr
    projects, reverse_echo, forward_echo, connect = result.stdout.strip().splitlines()
    assert "Sandbox Tower" in projects
    assert echo_ok(reverse_echo)
    assert echo_ok(forward_echo)
    assert connect == "200"  # curl sent CONNECT: it really went through the forward proxy


PYTHON_CLIENTS = """\
import json, os, ssl, sys, urllib.request
import requests
api, other, other_ca = sys.argv[1:4]
out = {}
with urllib.request.urlopen(os.environ["QONIC_API_URL"] + "/echo", timeout=20) as r:
    out["urllib_reverse"] = (r.status, r.read().decode())
with urllib.request.urlopen(api + "/v1/echo", timeout=20) as r:  # HTTPS_PROXY + SSL_CERT_FILE
    out["urllib_forward"] = (r.status, r.read().decode())
r = requests.get(os.environ["QONIC_API_URL"] + "/echo", timeout=20)
out["requests_reverse"] = (r.status_code, r.text)
r = requests.get(api + "/v1/echo", timeout=20)  # HTTPS_PROXY + REQUESTS_CA_BUNDLE
out["requests_forward"] = (r.status_code, r.text)
# Another host, trusting ONLY its own CA: works only if the proxy tunnelled, not intercepted.
ctx = ssl.create_default_context(cafile=other_ca)
with urllib.request.urlopen(urllib.request.Request(other + "/urllib"), context=ctx,
                            timeout=20) as r:
    out["urllib_other"] = (r.status, r.read().decode())
r = requests.get(other + "/requests", verify=other_ca, timeout=20)
out["requests_other"] = (r.status_code, r.text)
out["proxies"] = urllib.request.getproxies()
print(json.dumps(out))
"""


def test_python_urllib_and_requests(world: World) -> None:
    script = world.tmp / "clients.py"
    script.write_text(PYTHON_CLIENTS)
    before = len(world.other.seen)
    result = world.exec(sys.executable, str(script), world.api, world.other.https,
                        str(world.other.ca_file))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for name in ("urllib_reverse", "urllib_forward", "requests_reverse", "requests_forward"):
        status, body = out[name]
        assert status == 200, name
        assert echo_ok(body), name
    assert out["urllib_other"][0] == out["requests_other"][0] == 200
    assert out["proxies"]["https"].startswith("http://127.0.0.1:")
    seen = world.other.seen[before:]
    assert len(seen) == 2
    assert all("authorization" not in request["headers"] for request in seen)


NODE_CLIENT = r"""
const http = require("http"), tls = require("tls");
async function viaReverse() {
  const r = await fetch(process.env.QONIC_API_URL + "/echo");
  return [r.status, await r.text()];
}
// Node's fetch ignores HTTPS_PROXY (before NODE_USE_ENV_PROXY), so tunnel by hand: CONNECT
// through the forward proxy, then TLS verified with Node's roots + NODE_EXTRA_CA_CERTS only.
function viaForward(target) {
  const proxy = new URL(process.env.HTTPS_PROXY), t = new URL(target);
  return new Promise((resolve, reject) => {
    const req = http.request({host: proxy.hostname, port: proxy.port, method: "CONNECT",
                              path: `${t.hostname}:${t.port}`});
    req.on("error", reject);
    req.on("connect", (res, socket) => {
      if (res.statusCode !== 200) return reject(new Error("CONNECT " + res.statusCode));
      const s = tls.connect({socket, servername: t.hostname}, () => {
        s.write(`GET ${t.pathname} HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`);
      });
      let data = "";
      s.on("data", (d) => (data += d));
      s.on("end", () => resolve(data));
      s.on("error", reject);
    });
    req.end();
  });
}
(async () => {
  const [status, body] = await viaReverse();
  const raw = await viaForward(process.argv[1] + "/v1/echo");
  console.log(JSON.stringify({status, body, forwardStatus: raw.split(" ")[1],
                              forwardBody: raw.slice(raw.indexOf("\r\n\r\n") + 4)}));
})().catch((e) => { console.error(String(e)); process.exit(3); });
"""


def test_node_fetch_and_extra_ca_certs(world: World) -> None:
    result = world.exec("node", "-e", NODE_CLIENT, world.api)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["status"] == 200
    assert echo_ok(out["body"])
    assert out["forwardStatus"] == "200"
    assert echo_ok(out["forwardBody"])


def test_other_host_is_tunnelled_and_never_sees_the_token(world: World) -> None:
    before = len(world.other.seen)
    # --cacert with the other server's CA alone: an intercepted connection would fail to verify.
    result = world.exec("curl", "-sf", "--max-time", "20", "--cacert",
                        str(world.other.ca_file), "-w", "\n%{http_connect}",
                        world.other.https + "/curl")
    assert result.returncode == 0, result.stderr
    body, connect = result.stdout.splitlines()
    assert json.loads(body) == {"bystander": True}
    assert connect == "200"
    seen = world.other.seen[before:]
    assert len(seen) == 1
    assert "authorization" not in seen[0]["headers"]
    assert world.access_token not in json.dumps(seen)


def test_exit_codes_propagate(world: World) -> None:
    assert world.exec("sh", "-c", "exit 7").returncode == 7
    assert world.exec("true").returncode == 0
    killed = world.exec("sh", "-c", "kill -KILL $$")
    assert killed.returncode == 128 + signal.SIGKILL


def test_missing_and_non_executable_commands(world: World) -> None:
    missing = world.exec("no-such-command-qonic-test")
    assert missing.returncode == 127
    assert missing.stderr.strip() == \
        "qonic-proxy: no-such-command-qonic-test: command not found"
    plain = world.tmp / "not-executable.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(0o644)
    refused = world.exec(str(plain))
    assert refused.returncode == 126
    assert len(refused.stderr.strip().splitlines()) == 1
    assert world.exec(str(world.tmp / "nope" / "x")).returncode == 127


def test_usage_error_without_command(world: World) -> None:
    result = world.cli("exec")
    assert result.returncode == 2
    assert "exec needs a command" in result.stderr


SIGNAL_CHILD = """\
import signal, sys, time
from pathlib import Path
marker = Path(sys.argv[1])
def handler(signum, frame):
    marker.write_text(f"got {signum}")
    sys.exit(40 + signum)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, handler)
marker.write_text("ready")
deadline = time.monotonic() + 50
while time.monotonic() < deadline:
    time.sleep(0.02)
sys.exit(99)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_are_forwarded(world: World, signum: signal.Signals) -> None:
    """A private proxy: CMD runs under asyncio."""
    _assert_forwarded(world, world.config, signum, "private")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_forwarded_with_a_running_daemon(world: World,
                                                     signum: signal.Signals) -> None:
    """The running daemon, logged in: CMD runs under a plain Popen with signal handlers."""
    config = world.write_config("running-signals.toml", forward_port=free_port())
    with running_daemon(world, config):
        _assert_forwarded(world, config, signum, "running")


def _assert_forwarded(world: World, config: Path, signum: signal.Signals, label: str) -> None:
    script = world.tmp / "signal_child.py"
    script.write_text(SIGNAL_CHILD)
    marker = world.tmp / f"marker-{label}-{signum}"
    argv = [sys.executable, "-m", "qonic_proxy", "exec", "--config", str(config), "--",
            sys.executable, str(script), str(marker)]
    proc = subprocess.Popen(argv, env=world.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (marker.exists() and marker.read_text() == "ready"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.02)
        proc.send_signal(signum)  # to exec only, not to its process group
        _, stderr = proc.communicate(timeout=TIMEOUT)
        assert marker.read_text() == f"got {int(signum)}"
        assert proc.returncode == 40 + signum, stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


SIGPIPE_BIT = 1 << (signal.SIGPIPE - 1)  # in /proc/PID/status SigIgn
CHILD_REPORT = ("read -r line <&3; echo \"fd3=$line\"; grep '^SigIgn:' /proc/self/status; "
                "ls /proc/$$/fd | tr '\\n' ' '")  # the shell's descriptors, as ls sees them


def _exec_with_fd3(world: World, config: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """exec a shell that reads the descriptor 3 a calling shell opened, and shows its ignored
    signals."""
    given = tmp / "fd3.txt"
    given.write_text("from the caller\n")
    caller = 'exec 3<"$1"; shift; exec "$@"'
    return subprocess.run(
        ["sh", "-c", caller, "caller", str(given), sys.executable, "-m", "qonic_proxy", "exec",
         "--config", str(config), "--", "sh", "-c", CHILD_REPORT],
        env=world.env(), capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("label", ["private", "running"])
def test_cmd_gets_the_callers_descriptors_and_default_sigpipe(world: World, label: str,
                                                              tmp_path: Path) -> None:
    """As a shell's exec: `qonic-proxy exec -- cmd 3<file` gives cmd its fd 3, and no
    descriptor of qonic-proxy's own; and SIGPIPE, which Python ignores, is back to its default
    in CMD (`yes | head` must end)."""
    if label == "private":
        result = _exec_with_fd3(world, world.config, tmp_path)
    else:
        config = world.write_config("running-fds.toml", forward_port=free_port())
        with running_daemon(world, config):
            result = _exec_with_fd3(world, config, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "fd3=from the caller"
    assert not int(lines[1].split()[1], 16) & SIGPIPE_BIT, lines[1]
    # and nothing of qonic-proxy's own: its connections to the daemon, its netlink socket
    assert lines[2].split() == ["0", "1", "2", "3"], lines[2]


def test_with_a_running_daemon_exit_codes_and_unstartable_programs(world: World) -> None:
    """The plain path (os.posix_spawn) reports what the private one does."""
    script = world.tmp / "no-interpreter.sh"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    config = world.write_config("running-codes.toml", forward_port=free_port())
    with running_daemon(world, config):
        assert world.exec("sh", "-c", "exit 7", config=config).returncode == 7
        killed = world.exec("sh", "-c", "kill -TERM $$", config=config)
        assert killed.returncode == 128 + signal.SIGTERM
        unstartable = world.exec(str(script), config=config)
    assert unstartable.returncode == 126
    assert unstartable.stderr.strip() == \
        f"qonic-proxy: {script}: cannot execute (missing interpreter?)"


# ----- units -------------------------------------------------------------------------------------
def test_resolve_program(tmp_path: Path) -> None:
    assert resolve_program("sh", os.defpath) == shutil.which("sh", path=os.defpath)
    with pytest.raises(CommandError) as missing:
        resolve_program("no-such-command-qonic-test", os.defpath)
    assert (str(missing.value), missing.value.exit_code) == \
        ("no-such-command-qonic-test: command not found", 127)
    with pytest.raises(CommandError) as no_file:
        resolve_program(str(tmp_path / "nope"), None)
    assert no_file.value.exit_code == 127
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    for not_executable in (plain, tmp_path):
        with pytest.raises(CommandError) as refused:
            resolve_program(str(not_executable), None)
        assert refused.value.exit_code == 126
    plain.chmod(0o755)
    assert resolve_program(str(plain), None) == str(plain)


def test_resolve_program_with_an_empty_path_finds_nothing(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """As shutil.which: PATH="" names no folder, so a program in the current folder is not run."""
    (tmp_path / "here").write_text("#!/bin/sh\n")
    (tmp_path / "here").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    assert shutil.which("here", path="") is None
    for empty in ("", None):
        with pytest.raises(CommandError) as missing:
            resolve_program("here", empty)
        assert missing.value.exit_code == 127
    assert resolve_program("here", os.pathsep + "/nonexistent") == "here"  # "::" is "." as
    assert shutil.which("here", path=os.pathsep + "/nonexistent") == "here"  # for shutil


def test_a_signal_forwarded_as_cmd_is_reaped_reaches_no_other_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal handler may run right after CMD is reaped, before its status is kept: by then
    the pid may belong to another process, so nothing is sent to it."""
    child = SpawnedChild("/bin/sh", ["sh", "-c", "exit 3"], dict(os.environ))
    sent: list[tuple[int, int]] = []
    real_waitpid = os.waitpid

    def reaped_then_signalled(pid: int, options: int) -> tuple[int, int]:
        result = real_waitpid(pid, options)
        child.send_signal(signal.SIGTERM)  # the relay, from a handler, at the worst moment
        return result

    monkeypatch.setattr(os, "waitpid", reaped_then_signalled)
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    assert child.wait() == 3
    assert sent == []
    child.send_signal(signal.SIGTERM)
    assert sent == []


def test_exit_code_follows_the_shell() -> None:
    assert exit_code(0) == 0
    assert exit_code(7) == 7
    assert exit_code(-signal.SIGKILL) == 128 + signal.SIGKILL
    assert exit_code(-signal.SIGTERM) == 143


def test_run_command_reports_a_missing_program_before_any_login(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(write_config(tmp_path))
    assert run_command(cfg, ["no-such-command-qonic-test"]) == 127
    assert capsys.readouterr().err == "qonic-proxy: no-such-command-qonic-test: command not found\n"
    assert not (tmp_path / "ca").exists()  # not even the CA was made
    with pytest.raises(QonicProxyError, match="exec needs a command"):
        run_command(cfg, [])
