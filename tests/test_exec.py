"""`qonic-proxy exec` and `qonic-proxy ca`, end to end with real clients.

The sandbox listens on 127.0.0.2: NO_PROXY names 127.0.0.1 (so that the reverse listener is
reached directly), and a client only goes *through* the forward proxy for another address. A
second HTTPS server on 127.0.0.3, with a CA of its own, stands for "any other host": it must be
tunnelled (its own certificate reaches the client) and must never see an Authorization header.
Every child is started in its own session so a test can always kill what it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from qonic_proxy.config.loader import load_config
from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.certs import make_server_tls
from qonic_proxy.sandbox.settings import SandboxSettings
from qonic_proxy.wrap.exec_env import (
    NO_PROXY,
    Endpoints,
    ca_bundle,
    ca_certificate,
    child_environment,
    private_config,
)
from tests.harness import Bystander, start_bystander

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
CLIENT_ID = "exec-test-client"
SECRET = "exec-test-secret-" + "x" * 16
TIMEOUT = 60  # seconds any one subprocess may take
SANDBOX_HOST = "127.0.0.2"
OTHER_HOST = "127.0.0.3"

BROWSER = """\
#!{python}
# A scripted browser: follows the authorize URL (auto-consent) into the loopback callback.
import os, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=os.environ["SANDBOX_CA"])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}),
                                     urllib.request.HTTPSHandler(context=ctx))
with opener.open(sys.argv[-1], timeout=30) as response:
    response.read()
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


# ----- the world: sandbox, config, a logged-in token cache ------------------------------------
@dataclasses.dataclass
class World:
    tmp: Path
    sandbox: Sandbox
    other: Bystander
    config: Path
    browser: Path
    redirect_uri: str
    access_token: str = ""

    @property
    def api(self) -> str:
        return self.sandbox.url

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and k not in ("QONIC_PROXY_CONFIG",)}
        env.update(PYTHONPATH=str(REPO), QONIC_CLIENT_SECRET=SECRET,
                   BROWSER=str(self.browser), SANDBOX_CA=str(self.sandbox.ca_file))
        env.update(extra)
        return env

    def write_config(self, name: str, *, port: int | None = None, forward_port: int = 0,
                     ca_dir: str = "ca", cache: str = "state/token.json") -> Path:
        path = self.tmp / name
        path.write_text(textwrap.dedent(f"""\
            [qonic]
            api_url = "{self.api}"
            ca_file = "{self.sandbox.ca_file}"
            [oauth]
            client_id = "{CLIENT_ID}"
            scopes = ["projects:read", "models:read"]
            redirect_uri = "{self.redirect_uri}"
            open_browser = true
            login_timeout = 30
            [proxy]
            port = {port if port is not None else free_port()}
            forward_port = {forward_port}
            ca_dir = "{self.tmp / ca_dir}"
            [token]
            cache_file = "{self.tmp / cache}"
            """))
        return path

    def cli(self, *args: str, config: Path | None = None, timeout: float = TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        verb, rest = args[0], args[1:]
        argv = [sys.executable, "-m", "qonic_proxy", verb, "--config",
                str(config or self.config), *rest]
        return subprocess.run(argv, env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, start_new_session=True, check=False)

    def exec(self, *command: str, config: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.cli("exec", "--", *command, config=config, env=env)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("exec")
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    sandbox = Sandbox(SandboxSettings(
        host=SANDBOX_HOST, client_id=CLIENT_ID, client_secret=SECRET,
        redirect_uris=(redirect_uri,), auto_consent=True, cert_dir=tmp / "sandbox-tls"))
    sandbox.start()
    other = start_bystander(tmp, OTHER_HOST)
    browser = tmp / "browser.py"
    browser.write_text(BROWSER.format(python=sys.executable))
    browser.chmod(0o700)
    try:
        w = World(tmp, sandbox, other, Path(), browser, redirect_uri)
        w.config = w.write_config("config.toml")
        login = w.cli("login")
        assert login.returncode == 0, login.stderr
        token = w.cli("token")
        assert token.returncode == 0, token.stderr
        w.access_token = token.stdout.strip()
        assert len(w.access_token) >= 20
        yield w
    finally:
        other.stop()
        sandbox.stop()


def echo_ok(body: str) -> bool:
    """The sandbox's /v1/echo saw a bearer token that it issued and that is still valid."""
    return json.loads(body)["headers"].get("Authorization") == "<valid bearer>"


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


# ----- environment, exit codes, signals ------------------------------------------------------
def test_child_environment_has_proxy_settings_and_no_secret(world: World) -> None:
    result = world.exec("env")
    assert result.returncode == 0, result.stderr
    assert world.access_token not in result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert "QONIC_CLIENT_SECRET" not in env
    forward = env["HTTPS_PROXY"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", forward)
    assert env["HTTP_PROXY"] == env["http_proxy"] == env["https_proxy"] == forward
    assert env["NO_PROXY"] == env["no_proxy"] == NO_PROXY
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", env["QONIC_API_URL"])
    bundle = env["SSL_CERT_FILE"]
    assert env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == env["NODE_EXTRA_CA_CERTS"]
    assert bundle == env["CURL_CA_BUNDLE"] == str(world.tmp / "ca" / "ca-bundle.pem")
    assert env["QONIC_PROXY_CONFIG"] == str(world.config)
    # nothing but the command's own output (no "ready" line or log from the private proxy)
    assert "qonic-proxy ready" not in result.stdout
    assert result.stderr == ""


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
    script = world.tmp / "signal_child.py"
    script.write_text(SIGNAL_CHILD)
    marker = world.tmp / f"marker-{signum}"
    argv = [sys.executable, "-m", "qonic_proxy", "exec", "--config", str(world.config), "--",
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


# ----- running daemon, login -----------------------------------------------------------------
@contextlib.contextmanager
def running_daemon(world: World, config: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "qonic_proxy", "run", "--config", str(config),
                             "--log-level", "warning"],
                            env=world.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("qonic-proxy ready"), proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


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


# ----- the CA verbs ----------------------------------------------------------------------------
def pem_certificates(path: Path) -> list[bytes]:
    return [b"".join(m.split()) for m in re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", path.read_bytes(), re.S)]


def test_ca_verbs_print_existing_files_and_the_daemon_uses_that_ca(world: World) -> None:
    config = world.write_config("ca.toml", ca_dir="fresh-ca")
    ca_dir = world.tmp / "fresh-ca"
    assert not ca_dir.exists()

    first = world.cli("ca", config=config)
    assert first.returncode == 0, first.stderr
    cert = Path(first.stdout.strip())
    assert cert == ca_dir / "mitmproxy-ca-cert.pem"
    assert cert.is_file()
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "mitmproxy-ca.pem").stat().st_mode) == 0o600
    again = world.cli("ca", config=config)
    assert again.stdout == first.stdout
    assert pem_certificates(cert) == pem_certificates(Path(again.stdout.strip()))

    bundled = world.cli("ca", "--bundle", config=config)
    assert bundled.returncode == 0, bundled.stderr
    bundle = Path(bundled.stdout.strip())
    assert bundle == ca_dir / "ca-bundle.pem"
    certs = pem_certificates(bundle)
    assert pem_certificates(cert)[0] in certs
    assert set(pem_certificates(Path(certifi.where()))) <= set(certs)
    assert len(certs) == len(set(certs))

    # The CA `ca` made before any daemon ran is the one the proxy then signs with.
    result = world.exec("curl", "-sf", "--max-time", "20", "--cacert", str(cert),
                        world.api + "/v1/echo", config=config)
    assert result.returncode == 0, result.stderr
    assert echo_ok(result.stdout)


def test_bundle_includes_the_system_store(world: World, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import qonic_proxy.wrap.exec_env as exec_env

    corporate = make_server_tls(tmp_path / "corp", ips=("127.0.0.1",)).ca_file
    system = tmp_path / "system.crt"
    system.write_bytes(Path(certifi.where()).read_bytes() + corporate.read_bytes())
    monkeypatch.setattr(exec_env, "SYSTEM_BUNDLES", (tmp_path / "missing.crt", system))
    cfg = load_config(world.config)
    cfg = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, ca_dir=tmp_path / "ca"))
    bundle = Path(ca_bundle(cfg))
    certs = pem_certificates(bundle)
    assert pem_certificates(corporate)[0] in certs
    assert pem_certificates(Path(ca_certificate(cfg)))[0] in certs
    assert len(certs) == len(set(certs))  # certifi's roots were in both sources: kept once
    ssl.create_default_context(cafile=str(bundle))  # every block parses


def test_child_environment_and_private_config(world: World) -> None:
    base = {"PATH": "/bin", "QONIC_CLIENT_SECRET": "s3cret", "HTTPS_PROXY": "http://corp:3128"}
    env = child_environment(base, Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2"), "/b")
    assert "QONIC_CLIENT_SECRET" not in env
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:2"
    assert env["QONIC_API_URL"] == "http://127.0.0.1:1/v1"
    assert env["PATH"] == "/bin"
    assert base["QONIC_CLIENT_SECRET"] == "s3cret"  # the caller's mapping is left alone

    cfg = load_config(world.config)
    exposed = dataclasses.replace(cfg, proxy=dataclasses.replace(
        cfg.proxy, listen_host="0.0.0.0", allowed_hosts=("proxy.example",)))  # noqa: S104
    private = private_config(exposed)
    assert private.proxy.listen_host == "127.0.0.1"
    assert private.proxy.port == 0
    assert private.proxy.forward_port > 0
    assert {"proxy.example", "127.0.0.1", "localhost"} <= set(private.proxy.allowed_hosts)
