"""Every runtime through `qonic-proxy exec` against the real default api_url, inside a namespace.

Run as `unshare --mount --net python -m tests.wrap.ns_scenario WORKDIR` (root; see
test_runtimes.py, which builds the Go and Java probes first, since the namespace has no network).
In the new namespaces: `lo` up with two addresses of 198.18.0.0/15, a hosts file bind-mounted over
/etc/hosts (api.qonic.com and files.example.net), a system CA bundle bind-mounted over Debian's
that adds a test "public" CA for both hosts (nothing sets `ca_file`: the daemon trusts the
system store), the sandbox behind a TLS relay on api.qonic.com:443 (the sandbox itself listens
on loopback only) and a recording server on files.example.net:443. Bind mounts and addresses die
with the namespace. Writes WORKDIR/results.json: {client: {"lines": [...], "stderr": ...}} and
the recording server's requests.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi

from qonic_proxy.ports import free_port
from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context
from qonic_proxy.sandbox.settings import SandboxSettings

API_HOST, API_IP = "api.qonic.com", "198.18.0.10"
OTHER_HOST, OTHER_IP = "files.example.net", "198.18.0.11"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CLIENT_ID = "runtimes-test"
SECRET = "runtimes-secret-" + "y" * 16
TIMEOUT = 60
PROBES = Path(__file__).parent / "probes"
BROWSER = """\
#!{python}
import os, ssl, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
with opener.open(sys.argv[-1], timeout=30) as response:
    response.read()
"""




def prepare_namespace(work: Path, public_ca: bytes) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for ip in (API_IP, OTHER_IP):
        subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
    hosts = work / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n::1 localhost\n{API_IP} {API_HOST}\n"
                     f"{OTHER_IP} {OTHER_HOST}\n")
    system = work / "system-bundle.crt"
    base = SYSTEM_BUNDLE.read_bytes() if SYSTEM_BUNDLE.is_file() else Path(
        certifi.where()).read_bytes()
    system.write_bytes(base + b"\n" + public_ca)
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)
    SYSTEM_BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    if not SYSTEM_BUNDLE.exists():
        SYSTEM_BUNDLE.write_bytes(b"")  # pragma: no cover - Debian always has it
    subprocess.run(["mount", "--bind", str(system), str(SYSTEM_BUNDLE)], check=True)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tls_relay(ctx: ssl.SSLContext, address: tuple[str, int],
              target: tuple[str, int]) -> Iterator[None]:
    """TLS on `address` (api.qonic.com's certificate), plain bytes on to the sandbox."""
    listener = socket.create_server(address)
    listener.settimeout(0.2)
    stop = threading.Event()

    def handle(raw: socket.socket) -> None:
        try:
            client = ctx.wrap_socket(raw, server_side=True)
            upstream = socket.create_connection(target, timeout=TIMEOUT)
        except OSError:
            raw.close()
            return
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        back.start()
        _pipe(client, upstream)
        back.join(TIMEOUT)
        client.close()
        upstream.close()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                raw, _ = listener.accept()
                raw.settimeout(TIMEOUT)
                threading.Thread(target=handle, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        listener.close()


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append({"path": self.path,
                          "headers": {k.lower(): v for k, v in self.headers.items()}})
        body = b'{"recorded": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def stop_daemon(daemon: subprocess.Popen[str]) -> None:
    """SIGTERM (a graceful stop), SIGKILL after 20 s; always reaped."""
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(20)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(10)


def write_config(work: Path, port: int, forward_port: int, redirect_uri: str) -> Path:
    config = work / "config.toml"
    config.write_text(f"""\
[oauth]
client_id = "{CLIENT_ID}"
scopes = ["projects:read"]
redirect_uri = "{redirect_uri}"
login_timeout = 30
[proxy]
port = {port}
forward_port = {forward_port}
ca_dir = "{work / 'ca'}"
[token]
cache_file = "{work / 'state' / 'token.json'}"
""")
    return config


def clients(work: Path) -> dict[str, list[str]]:
    """Each client's argv (without URLs); a client whose runtime is missing is left out."""
    found: dict[str, list[str]] = {
        "curl": ["curl", "-s", "--max-time", "20", "-w", "\\n"],
        "urllib": [sys.executable, str(PROBES / "fetch.py"), "urllib"],
        "requests": [sys.executable, str(PROBES / "fetch.py"), "requests"],
    }
    with contextlib.suppress(ImportError):
        import httpx  # noqa: F401

        found["httpx"] = [sys.executable, str(PROBES / "fetch.py"), "httpx"]
    for name, argv in {"wget": ["wget", "-q", "-O", "-", "--timeout=20"],
                       "ruby": ["ruby", str(PROBES / "fetch.rb")],
                       "php": ["php", str(PROBES / "fetch.php")],
                       "node": [node_program(), str(PROBES / "fetch.js")]}.items():
        if _which(argv[0]):
            found[name] = argv
    if (work / "fetch-go").is_file():
        found["go"] = [str(work / "fetch-go")]
    if (work / "java" / "Fetch.class").is_file():
        found["java"] = ["java", "-cp", str(work / "java"), "Fetch"]
    return found


def _which(program: str) -> bool:
    return shutil.which(program, path="/usr/local/bin:/usr/bin:/bin") is not None


def node_program() -> str:
    """`$QONIC_TEST_NODE` (a Node >= 22 that .ci/run unpacks from the npm registry), else the
    system's `node`."""
    return os.environ.get("QONIC_TEST_NODE") or "node"


def run_clients(work: Path, config: Path, reverse_url: str) -> dict[str, Any]:
    home = work / "home"
    home.mkdir(exist_ok=True)
    (home / ".wgetrc").write_text("user_agent = users-own-wgetrc\n")  # must be carried over
    results: dict[str, Any] = {}
    for name, argv in clients(work).items():
        urls = [f"https://{API_HOST}/v1/echo?client={name}",
                f"https://{OTHER_HOST}/record/{name}"]
        if name == "node":  # Node < 22 ignores proxy variables: forward and reverse both
            urls.append(f"{reverse_url}/v1/echo?client=node-reverse")
        command = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={home}",
                   sys.executable, "-m", "qonic_proxy", "exec", "--config", str(config), "--",
                   *argv, *urls]
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
        results[name] = {"code": done.returncode, "lines": done.stdout.splitlines(),
                         "stderr": done.stderr[-2000:]}
    return results


def main(work: Path) -> None:
    os.environ.pop("SSL_CERT_FILE", None)
    os.environ.pop("SSL_CERT_DIR", None)
    public = make_server_tls(work / "public-api", hostnames=(API_HOST,), ips=())
    other = make_server_tls(work / "public-other", hostnames=(OTHER_HOST,), ips=())
    prepare_namespace(work, public.ca_file.read_bytes() + other.ca_file.read_bytes())
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    sandbox = Sandbox(SandboxSettings(host="127.0.0.1", tls=False, client_id=CLIENT_ID,
                                      client_secret=SECRET, redirect_uris=(redirect_uri,),
                                      auto_consent=True))
    sandbox.start()
    recorder = http.server.ThreadingHTTPServer((OTHER_IP, 443), Recorder)
    recorder.socket = server_ssl_context(other).wrap_socket(recorder.socket, server_side=True)
    recorder.daemon_threads = True
    threading.Thread(target=recorder.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    port = free_port()
    config = write_config(work, port, free_port(), redirect_uri)
    browser = work / "browser.py"
    browser.write_text(BROWSER.format(python=sys.executable))
    browser.chmod(0o700)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work / "home"),
           "BROWSER": str(browser), "QONIC_CLIENT_SECRET": SECRET}
    sandbox_port = int(sandbox.url.rsplit(":", 1)[1])
    daemon = None
    try:
        with tls_relay(server_ssl_context(public), (API_IP, 443), ("127.0.0.1", sandbox_port)):
            login = subprocess.run([sys.executable, "-m", "qonic_proxy", "login", "--config",
                                    str(config)], env=env, capture_output=True, text=True,
                                   timeout=TIMEOUT, check=False)
            if login.returncode != 0:
                raise SystemExit(f"login failed: {login.stderr}")
            daemon = subprocess.Popen([sys.executable, "-m", "qonic_proxy", "run", "--config",
                                       str(config), "--log-level", "warning"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = daemon.stdout.readline() if daemon.stdout else ""
            if not line.startswith("qonic-proxy ready"):
                raise SystemExit(f"daemon did not start: {line}")
            results = run_clients(work, config, f"http://127.0.0.1:{port}")
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        recorder.shutdown()
        sandbox.stop()
    (work / "results.json").write_text(json.dumps({"clients": results,
                                                   "recorded": Recorder.seen}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
