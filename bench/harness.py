"""Shared plumbing for the benchmark and the streaming guard test: processes, sandbox, login.

Everything runs as its own process on 127.0.0.1 so that the proxy under test gets a CPU of its
own and its memory (VmHWM) is its alone. Every wait has a deadline; every process started here
is registered with a `Processes` group and stopped by it, by its own pid.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import selectors
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
CLIENT_ID = "qonic-proxy-bench"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the bench reads the redirect itself
SCOPES = ("projects:read", "models:read", "models:write")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for our children: the repo importable, no proxy variables inherited."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a live process, in KiB (Linux /proc)."""
    return _proc_status_kib(pid, "VmHWM")


def vm_rss_kib(pid: int) -> int:
    return _proc_status_kib(pid, "VmRSS")


def _proc_status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/{pid}/status has no {field} line")
    return int(match.group(1))


# ----- processes ------------------------------------------------------------------------------
@dataclass
class Started:
    """A child process and the stdout reader we use to find its ready line."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None
    _buffer: bytes = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with `prefix`; raises with the log tail on failure."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buffer:
                    raw, self._buffer = self._buffer.split(b"\n", 1)
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name} did not print {prefix!r} within "
                                       f"{timeout:g} s{self.log_tail()}")
                if not sel.select(min(left, 0.5)):
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"{self.name} exited with {self.proc.returncode} "
                                           f"before it was ready{self.log_tail()}")
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode} "
                                       f"before it was ready{self.log_tail()}")
                self._buffer += chunk

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- last lines of " + str(self.log_path) + " ---\n" + "\n".join(tail)


class Processes:
    """Starts children and guarantees they are stopped (SIGTERM, then SIGKILL) by their pid."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Started] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              ) -> Started:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                env=env or child_env(), cwd=REPO, close_fds=True)
        started = Started(name, proc, log_path)
        self.children.append(started)
        return started

    def stop(self, started: Started, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait (bounded), SIGKILL if needed; returns the exit code."""
        proc = started.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(ValueError):
            self.children.remove(started)
        return proc.returncode

    def stop_all(self) -> None:
        for started in reversed(list(self.children)):
            with contextlib.suppress(Exception):
                self.stop(started, timeout=5.0)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


# ----- the sandbox and a scripted login -------------------------------------------------------
@dataclass(frozen=True)
class SandboxInfo:
    url: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    started: Started


def start_sandbox(procs: Processes, cert_dir: Path, timeout: float = 20.0) -> SandboxInfo:
    """The sandbox as its own process (its download/upload threads must not share our GIL)."""
    started = procs.start("sandbox", [
        sys.executable, "-m", "qonic_proxy", "sandbox", "--",
        "--host", "127.0.0.1", "--port", "0", "--public", "--auto-consent",
        "--client-id", CLIENT_ID, "--redirect-uri", REDIRECT_URI, "--cert-dir", str(cert_dir),
    ])
    line = started.wait_line("sandbox ready:", timeout)
    fields = dict(part.split("=", 1) for part in line.split()[2:])
    return SandboxInfo(url=fields["url"], ca_file=Path(fields["ca_file"]),
                       cert_file=cert_dir / "server.pem", key_file=cert_dir / "server-key.pem",
                       started=started)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, *, api_url: str, sandbox: SandboxInfo, workdir: Path,
                 port: int = 0, forward_port: int = 0) -> Path:
    """A daemon config: API at `api_url`, OAuth at the sandbox, everything under `workdir`."""
    tables = {
        "qonic": {"api_url": api_url, "authorize_url": sandbox.url + "/v1/auth/authorize",
                  "token_url": sandbox.url + "/v1/auth/token", "ca_file": str(sandbox.ca_file)},
        "oauth": {"client_id": CLIENT_ID, "scopes": list(SCOPES), "redirect_uri": REDIRECT_URI,
                  "open_browser": False, "login_timeout": 30},
        "proxy": {"listen_host": "127.0.0.1", "port": port, "forward_port": forward_port,
                  "ca_dir": str(workdir / "ca")},
        "token": {"cache_file": str(workdir / "state" / "token.json")},
    }
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in body.items()) + "\n"
                   for name, body in tables.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _no_redirect_opener(ca_file: Path) -> urllib.request.OpenerDirector:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    context = ssl.create_default_context(cafile=str(ca_file))
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect(),
                                       urllib.request.HTTPSHandler(context=context))


def scripted_login(config_path: Path) -> str:
    """Log in against the auto-consenting sandbox and cache the token where the daemon looks.

    The authorize request is answered with a redirect carrying the code; we read it instead of
    following it, then use the product's own code exchange and token store. Returns the access
    token (for the direct measurements, which must send the same header the proxy adds).
    """
    from qonic_proxy.config.loader import load_config
    from qonic_proxy.oauth.authorize import build_authorize_url
    from qonic_proxy.oauth.client import exchange_code
    from qonic_proxy.tokens.store import TokenStore, cache_key

    cfg = load_config(config_path, env={})
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")
    state = secrets.token_urlsafe(16)
    url = build_authorize_url(cfg, code_challenge=challenge, state=state)
    assert cfg.qonic.ca_file is not None
    try:
        with _no_redirect_opener(cfg.qonic.ca_file).open(url, timeout=15) as response:
            raise RuntimeError(f"the sandbox answered the authorize request with "
                               f"{response.status}, not a redirect")
    except urllib.error.HTTPError as err:
        location = err.headers.get("Location", "")
        err.close()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    if query.get("state") != [state] or "code" not in query:
        raise RuntimeError("the sandbox's authorize redirect carried no code for our state")
    tokens = exchange_code(cfg, code=query["code"][0], code_verifier=verifier, timeout=15)
    TokenStore(cfg.token.cache_file, cache_key(cfg)).save(tokens)
    return tokens.access_token


def copy_login(source_config: Path, target_config: Path) -> None:
    """Cache the token of `source_config` for `target_config` (same endpoint, client, scopes)."""
    from qonic_proxy.config.loader import load_config
    from qonic_proxy.tokens.store import TokenStore, cache_key

    source = load_config(source_config, env={})
    target = load_config(target_config, env={})
    tokens = TokenStore(source.token.cache_file, cache_key(source)).load()
    if tokens is None:
        raise RuntimeError(f"no cached token for {source_config}")
    TokenStore(target.token.cache_file, cache_key(target)).save(tokens)


# ----- the daemon -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Proxy:
    """A running proxy process and where it listens."""

    started: Started
    reverse_port: int
    forward_port: int | None
    ca_cert: Path | None  # what a forward-mode client must trust
    ready_seconds: float

    @property
    def pid(self) -> int:
        return self.started.pid


_READY = re.compile(r"reverse http://127\.0\.0\.1:(\d+)(?: forward http://127\.0\.0\.1:(\d+))?")


def start_daemon(procs: Processes, config_path: Path, name: str = "qonic-proxy",
                 log_level: str = "info", timeout: float = 30.0, tweaks: str = "") -> Proxy:
    """`python -m qonic_proxy run --config FILE`, timed from spawn to its ready line.

    `tweaks` (comma-separated names from bench/variant.py) runs it with a proposed change.
    """
    begin = time.monotonic()
    entry = ([str(BENCH / "variant.py"), tweaks, "--"] if tweaks else ["-m", "qonic_proxy"])
    started = procs.start(name, [sys.executable, *entry, "run", "--config",
                                 str(config_path), "--log-level", log_level])
    line = started.wait_line("qonic-proxy ready:", timeout)
    ready = time.monotonic() - begin
    match = _READY.search(line)
    if match is None:
        raise RuntimeError(f"cannot read the ports from the ready line {line!r}")
    forward = int(match.group(2)) if match.group(2) else None
    ca_dir = config_path.parent / "ca"
    return Proxy(started, int(match.group(1)), forward, ca_dir / "mitmproxy-ca-cert.pem", ready)


def start_bare_mitmproxy(procs: Processes, config_path: Path, name: str = "bare-mitmproxy",
                         timeout: float = 30.0) -> Proxy:
    """mitmproxy with the daemon's options and addon set, without our addon (bare_mitm.py)."""
    begin = time.monotonic()
    started = procs.start(name, [sys.executable, str(BENCH / "bare_mitm.py"),
                                 "--config", str(config_path)])
    line = started.wait_line("bare-mitmproxy ready:", timeout)
    match = _READY.search(line)
    if match is None:
        raise RuntimeError(f"cannot read the ports from the ready line {line!r}")
    forward = int(match.group(2)) if match.group(2) else None
    ca_dir = config_path.parent / "ca"
    return Proxy(started, int(match.group(1)), forward, ca_dir / "mitmproxy-ca-cert.pem",
                 time.monotonic() - begin)


@contextlib.contextmanager
def deadline_guard(seconds: float, what: str) -> Iterator[None]:
    """Raise after the block if it overran (for loops that already bound each step)."""
    begin = time.monotonic()
    yield
    if time.monotonic() - begin > seconds:
        raise RuntimeError(f"{what} took longer than {seconds:g} s")


def read_json(stream: IO[bytes]) -> Any:
    return json.loads(stream.read().decode())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used (Linux /proc), in seconds.

    Per-request CPU is a steadier measure of a proxy's own cost than requests/s on a small,
    shared machine, where the load generator and the upstream compete for the same cores.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
