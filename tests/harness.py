"""End-to-end test harness: a sandbox, a config file, the real daemon as a subprocess, clients.

Everything binds to 127.0.0.1 on ephemeral ports, lives in a pytest tmp_path, and is stopped by
the fixtures that start it. Waits poll a condition with a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qonic_proxy.ports import free_port
from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context
from qonic_proxy.sandbox.settings import SandboxSettings

TESTS = Path(__file__).resolve().parent
BROWSER_SCRIPT = TESTS / "browser.py"
SCOPES = ["projects:read", "models:read", "models:write"]




def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_toml(path: Path, data: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, keys in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None]
        lines.append("")
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


@dataclass
class World:
    """One test's sandbox, directories and config."""

    tmp: Path
    sandbox: Sandbox
    callback_port: int
    forward_port: int
    client_secret: str
    config: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.tmp / "config.toml"

    @property
    def cache_file(self) -> Path:
        return self.tmp / "state" / "token.json"

    @property
    def ca_dir(self) -> Path:
        return self.tmp / "ca"

    @property
    def proxy_ca(self) -> Path:
        return self.ca_dir / "mitmproxy-ca-cert.pem"

    @property
    def browser_log(self) -> Path:
        return self.tmp / "browser.log"

    def browser_runs(self) -> int:
        return len(self.browser_log.read_text().splitlines()) if self.browser_log.exists() else 0

    def write_config(self) -> Path:
        return write_toml(self.config_path, self.config)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("QONIC_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                                    "https_proxy", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env.update(
            BROWSER=f"{shlex.quote(sys.executable)} {shlex.quote(str(BROWSER_SCRIPT))} %s",
            BROWSER_LOG=str(self.browser_log),
            SANDBOX_CA=str(self.sandbox.ca_file),
            QONIC_CLIENT_SECRET=self.client_secret,
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def daemon(self, *args: str, env: dict[str, str] | None = None,
               prefix: list[str] | None = None) -> DaemonProcess:
        """`prefix` runs the daemon through a wrapper that execs it (see tests/faults/isolation)."""
        self.write_config()
        return DaemonProcess(self.config_path, env or self.env(), self.tmp, list(args),
                             prefix or [])

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60,
            ) -> subprocess.CompletedProcess[str]:
        self.write_config()
        return run_cli(*args, "--config", str(self.config_path), env=env or self.env(),
                       timeout=timeout)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qonic_proxy", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def make_world(tmp: Path, **sandbox_overrides: Any) -> World:
    callback_port = free_port()
    secret = "s3cret-" + os.urandom(8).hex()
    settings = SandboxSettings(
        client_id="test-client", client_secret=secret,
        redirect_uris=(f"http://127.0.0.1:{callback_port}/callback",),
        cert_dir=tmp / "sandbox-tls",
    )
    for key, value in sandbox_overrides.items():
        setattr(settings, key, value)
    sandbox = Sandbox(settings)
    sandbox.start()
    world = World(tmp=tmp, sandbox=sandbox, callback_port=callback_port,
                  forward_port=free_port(), client_secret=secret)
    world.config = {
        "qonic": {"api_url": sandbox.url, "ca_file": str(sandbox.ca_file)},
        "oauth": {"client_id": "test-client", "scopes": SCOPES,
                  "redirect_uri": f"http://127.0.0.1:{callback_port}/callback",
                  "login_timeout": 30},
        "proxy": {"listen_host": "127.0.0.1", "port": 0, "forward_port": world.forward_port,
                  "ca_dir": str(world.ca_dir)},
        "token": {"cache_file": str(world.cache_file), "refresh_margin": 5},
    }
    return world


class DaemonProcess:
    """`qonic-proxy run` as a real process; its stdout ready line tells the ports."""

    def __init__(self, config: Path, env: dict[str, str], tmp: Path, args: list[str],
                 prefix: list[str] | None = None) -> None:
        self.stderr_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        self._stderr = self.stderr_path.open("wb")
        self.started = time.monotonic()
        self.ready_seconds: float | None = None  # process start to ready line (start-up time)
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "qonic_proxy", "run", "--config", str(config),
             "--log-level", "debug", *args],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, env=env,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.reverse_url = ""
        self.forward_url = ""

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)

    def wait_ready(self, timeout: float = 30) -> DaemonProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited with {self.proc.returncode}:\n"
                                         + self.stderr_text()[-3000:]) from None
                continue
            if line.startswith("qonic-proxy ready:"):
                self.ready_seconds = time.monotonic() - self.started
                words = line.split()
                self.reverse_url = words[words.index("reverse") + 1]
                if "forward" in words:
                    self.forward_url = words[words.index("forward") + 1]
                return self
        raise AssertionError("daemon not ready in time:\n" + self.stderr_text()[-3000:])

    def health(self) -> tuple[int, dict[str, Any]]:
        status, _, body = http_request(self.reverse_url + "/-/health")
        return status, json.loads(body)

    def wait_logged_in(self, timeout: float = 30) -> None:
        wait_for(lambda: self.health()[0] == 200, timeout, "the daemon to be logged in")

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        stop_process(self.proc, timeout)
        self._stderr.close()
        return self.proc.returncode


def stop_process(proc: subprocess.Popen[Any], grace: float = 10) -> None:
    """SIGTERM a process this test started (by its pid), SIGKILL it after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def http_request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                 data: bytes | None = None, proxy: str | None = None,
                 cafile: Path | None = None, timeout: float = 30,
                 ) -> tuple[int, dict[str, str], bytes]:
    """urllib, with no environment proxies unless `proxy` is given; never raises on 4xx/5xx."""
    handlers: list[Any] = [urllib.request.ProxyHandler({"http": proxy, "https": proxy}
                                                       if proxy else {})]
    if cafile is not None:
        handlers.append(urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=str(cafile))))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real curl, ignoring any proxy settings of the environment unless passed in args."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *args],
                          capture_output=True, text=True, timeout=timeout + 5, env=env)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A server that is not the Qonic API: records what arrives, answers 200 JSON."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append({"method": self.command, "path": self.path,
                          "headers": {k.lower(): v for k, v in self.headers.items()}})
        body = b'{"bystander": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_OPTIONS = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Bystander:
    """A plain-HTTP and an HTTPS server (own CA) sharing one record: must never see a token."""

    plain: str
    https: str
    ca_file: Path
    seen: list[dict[str, Any]]
    servers: list[http.server.ThreadingHTTPServer] = field(default_factory=list)

    @property
    def https_port(self) -> int:
        return int(self.https.rsplit(":", 1)[1])

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def start_bystander(tmp: Path, host: str = "127.0.0.1") -> Bystander:
    seen: list[dict[str, Any]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    plain = http.server.ThreadingHTTPServer((host, 0), handler)
    tls = make_server_tls(tmp / f"bystander-tls-{host}", ips=(host, "127.0.0.1", "::1"))
    secure = http.server.ThreadingHTTPServer((host, 0), handler)
    secure.socket = server_ssl_context(tls).wrap_socket(secure.socket, server_side=True)
    for server in (plain, secure):
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
    return Bystander(f"http://{host}:{plain.server_address[1]}",
                     f"https://{host}:{secure.server_address[1]}", tls.ca_file, seen,
                     [plain, secure])
