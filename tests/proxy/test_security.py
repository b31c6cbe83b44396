"""Attacks against the real daemon (real mitmproxy, real sockets on 127.0.0.1) and its files.

Each test names the defence it proves; SECURITY.md lists which test fails when that defence is
removed. The API is configured by *name* (`https://localhost:PORT`) so that aliases (127.0.0.1,
LOCALHOST, trailing dots) and suffix tricks can be told apart from the real origin. A recording
"bystander" server stands for every host that is not the API: it must never see a token.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qonic_proxy.errors import QonicProxyError
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.proxy import client_key
from qonic_proxy.tokens.store import TokenStore
from tests.harness import (
    TESTS,
    DaemonProcess,
    World,
    curl,
    free_port,
    http_request,
    run_cli,
    wait_for,
    write_toml,
)
from tests.proxy.lab import (
    ROOT,
    Lab,
    _health_latency,
    _key,
    api_traffic,
    no_cors,
    parse_response,
    port_of,
    raw_exchange,
)

pytestmark = pytest.mark.e2e


# ===== 1. Token destination ====================================================================
def test_absolute_form_to_another_host_with_the_api_host_header_gets_no_token(lab: Lab):
    before = len(lab.bystander.seen)
    request = (f"GET {lab.bystander.plain}/steal HTTP/1.1\r\n"
               f"Host: localhost:{lab.api_port}\r\nConnection: close\r\n\r\n").encode()
    status, _, _ = parse_response(raw_exchange(lab.forward_port, request))
    assert status == 200
    arrived = lab.bystander.seen[before:]
    assert len(arrived) == 1 and "authorization" not in arrived[0]["headers"]


def test_connect_to_another_host_with_api_sni_and_host_is_tunnelled_untouched(lab: Lab):
    """CONNECT 127.0.0.1:<bystander>, then TLS with SNI and Host of the API: a raw tunnel."""
    before = len(lab.bystander.seen)
    with socket.create_connection(("127.0.0.1", lab.forward_port), timeout=10) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{lab.bystander.https_port} HTTP/1.1\r\n"
                     f"Host: localhost:{lab.api_port}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        # Only the bystander's own CA verifies: proof that nobody intercepted the tunnel.
        context = ssl.create_default_context(cafile=str(lab.bystander.ca_file))
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(f"GET /tunnel HTTP/1.1\r\nHost: localhost:{lab.api_port}\r\n"
                        "Connection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    arrived = lab.bystander.seen[before:]
    assert len(arrived) == 1 and "authorization" not in arrived[0]["headers"]


def test_connect_to_the_api_host_on_another_port_gets_no_token(lab: Lab):
    before = len(lab.bystander.seen)
    url = f"https://localhost:{lab.bystander.https_port}/other-port"
    result = curl("--proxy", lab.daemon.forward_url, "--cacert", str(lab.bystander.ca_file),
                  "-f", url, timeout=20)
    assert result.returncode == 0, result.stderr  # the bystander's own certificate: tunnelled
    arrived = lab.bystander.seen[before:]
    assert len(arrived) == 1 and "authorization" not in arrived[0]["headers"]


def test_ip_alias_of_the_api_host_is_not_the_api_origin(lab: Lab):
    """127.0.0.1 reaches the same server, but only the configured name earns the token."""
    both = lab.world.tmp / "both-cas.pem"
    both.write_bytes(lab.world.proxy_ca.read_bytes() + lab.world.sandbox.ca_file.read_bytes())
    before = api_traffic(lab.world)
    for sni in ("", "localhost"):  # IP without SNI, and IP with the API's name as SNI
        args = ["--connect-to", f"localhost:{lab.api_port}:127.0.0.1:{lab.api_port}"] if sni \
            else []
        result = curl("--proxy", lab.daemon.forward_url, "--cacert", str(both), "-sS",
                      "-o", "/dev/null", "-w", "%{http_code}", *args,
                      f"https://127.0.0.1:{lab.api_port}/v1/projects", timeout=20)
        assert result.stdout.strip() == "401", result.stderr  # the API saw no token
    assert api_traffic(lab.world)[1] == before[1]


def test_upper_case_spelling_of_the_api_name_is_the_api(lab: Lab):
    """Same DNS name, same origin: documented to earn the token (trailing dot: in-process test)."""
    result = lab.via_forward("-f", f"https://LOCALHOST:{lab.api_port}/v1/projects")
    assert result.returncode == 0, result.stderr


def test_plain_http_to_the_api_host_is_refused_with_json(lab: Lab):
    before = api_traffic(lab.world)
    status, headers, body = http_request(f"http://localhost:{lab.api_port}/v1/projects",
                                         proxy=lab.daemon.forward_url)
    assert status == 403 and json.loads(body)["error"] == "plain_http_refused"
    assert headers["Content-Type"] == "application/json" and no_cors(headers)
    assert api_traffic(lab.world) == before


def test_export_redirect_is_passed_to_the_client_not_followed(lab: Lab):
    path = "/v1/projects/p-1001/models/m-1/export-ifc/op-1/result"
    reverse = curl("-sS", "-D", "-", "-o", "/dev/null", lab.daemon.reverse_url + path)
    assert reverse.stdout.startswith("HTTP/1.1 302")
    assert f"location: {lab.bystander.plain}/exported.ifc" in reverse.stdout.lower()
    before = len(lab.bystander.seen)
    # curl -L through the forward proxy: the second hop goes to the bystander via the proxy.
    followed = lab.via_forward("-f", "-L", lab.api + path)
    assert followed.returncode == 0, followed.stderr
    arrived = lab.bystander.seen[before:]
    assert len(arrived) == 1 and arrived[0]["path"] == "/exported.ifc"
    assert "authorization" not in arrived[0]["headers"]



# ===== 2. Browser attacks ======================================================================
@pytest.mark.parametrize(("name", "extra"), [
    ("rebinding", {"Host": "evil.example"}),
    ("rebinding-port", {"Host": "evil.example:8080"}),
    ("origin", {"Origin": "https://evil.example"}),
    ("origin-null", {"Origin": "null"}),
    ("cross-site", {"Sec-Fetch-Site": "cross-site"}),
    ("same-site", {"Sec-Fetch-Site": "same-site"}),
])
def test_browser_attacks_on_the_reverse_listener_get_403_json(lab: Lab, name: str, extra: dict):
    before = api_traffic(lab.world)
    status, headers, body = http_request(lab.daemon.reverse_url + "/v1/projects", headers=extra)
    assert status == 403, name
    assert headers["Content-Type"] == "application/json" and no_cors(headers)
    assert json.loads(body)["error"] in ("host_not_allowed", "cross_site")
    assert api_traffic(lab.world) == before  # nothing went upstream


def test_requests_a_browser_marks_as_ours_still_work(lab: Lab):
    """The control for the test above: the guard does not just refuse everything."""
    own = f"http://127.0.0.1:{lab.reverse_port}"
    for extra in ({"Origin": own}, {"Sec-Fetch-Site": "none"}, {"Sec-Fetch-Site": "same-origin"},
                  {"Host": f"localhost:{lab.reverse_port}"}):
        status, headers, _ = http_request(lab.daemon.reverse_url + "/v1/projects", headers=extra)
        assert status == 200, extra
        assert no_cors(headers)


def test_cors_preflight_is_refused_without_any_grant(lab: Lab):
    before = api_traffic(lab.world)
    result = curl("-sS", "-D", "-", "-X", "OPTIONS", "-H", "Origin: https://evil.example",
                  "-H", "Access-Control-Request-Method: GET",
                  "-H", "Access-Control-Request-Headers: authorization",
                  lab.daemon.reverse_url + "/v1/projects")
    assert result.stdout.startswith("HTTP/1.1 403")
    assert "access-control-" not in result.stdout.lower()
    assert api_traffic(lab.world) == before


def test_non_proxy_request_to_the_forward_listener_is_guarded(lab: Lab):
    """A rebound name pointing at the forward port sends origin-form requests: 403, no relay."""
    before = len(lab.bystander.seen)
    for target in (f"evil.example:{lab.forward_port}", f"127.0.0.1:{port_of(lab.bystander.plain)}"):
        raw = raw_exchange(lab.forward_port, (f"GET /v1/projects HTTP/1.1\r\nHost: {target}\r\n"
                                              "Connection: close\r\n\r\n").encode())
        status, headers, body = parse_response(raw)
        assert status in (403, 404), raw[:300]
        assert headers["content-type"] == "application/json"
    assert len(lab.bystander.seen) == before  # never relayed


def test_cross_site_request_through_the_forward_proxy_is_refused(lab: Lab):
    """A browser whose system proxy is us: its page's requests to the API must not get the token."""
    before = api_traffic(lab.world)
    for header in ("Sec-Fetch-Site: cross-site", "Sec-Fetch-Site: same-site",
                   "Origin: https://evil.example"):
        result = lab.via_forward("-sS", "-D", "-", "--suppress-connect-headers", "-H", header,
                                 lab.api + "/v1/projects")
        assert result.stdout.startswith("HTTP/1.1 403"), (header, result.stdout[:300])
        assert '"cross_site"' in result.stdout and "access-control-" not in result.stdout.lower()
    assert api_traffic(lab.world) == before



# ===== 3. Other local users: the client key ====================================================

def test_generated_key_file_is_private(keyed: Lab):
    path = keyed.world.tmp / "keys" / "client.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(_key(keyed)) >= 32


def test_reverse_listener_requires_the_key(keyed: Lab):
    before = api_traffic(keyed.world)
    url = keyed.daemon.reverse_url + "/v1/echo"
    for headers in ({}, {client_key.KEY_HEADER: "wrong-key-wrong-key"},
                    {"Authorization": "Basic " + base64.b64encode(b"qonic:nope").decode()}):
        status, answer, body = http_request(url, headers=headers)
        assert status == 401 and json.loads(body)["error"] == "client_key_required"
        assert "WWW-Authenticate" in answer
    status, _, _ = http_request(keyed.daemon.reverse_url + "/-/health")
    assert status == 401  # the operational endpoints too
    assert api_traffic(keyed.world) == before


def test_reverse_key_in_header_or_basic_is_accepted_and_stripped(keyed: Lab):
    url = keyed.daemon.reverse_url + "/v1/echo"
    key = _key(keyed)
    status, _, body = http_request(url, headers={client_key.KEY_HEADER: key})
    assert status == 200
    headers = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert client_key.KEY_HEADER.lower() not in headers
    assert headers["authorization"] == "<valid bearer>"
    basic = curl("-f", "-u", f"qonic:{key}", url)
    assert basic.returncode == 0, basic.stderr
    headers = {k.lower(): v for k, v in json.loads(basic.stdout)["headers"].items()}
    assert headers["authorization"] == "<valid bearer>"
    assert key not in basic.stdout


def test_forward_listener_requires_the_key_for_connect_and_plain_http(keyed: Lab):
    before = len(keyed.bystander.seen)
    proxy_ca = str(keyed.world.proxy_ca)
    for proxy in (keyed.daemon.forward_url,
                  keyed.daemon.forward_url.replace("http://", "http://qonic:wrong@")):
        tunnelled = curl("--proxy", proxy, "--cacert", proxy_ca, "-sS", "-o", "/dev/null",
                         "-w", "%{http_connect}", keyed.api + "/v1/projects")
        assert tunnelled.stdout.strip() == "407", tunnelled.stderr
        tunnel_elsewhere = curl("--proxy", proxy, "--cacert", str(keyed.bystander.ca_file),
                                "-sS", "-o", "/dev/null", "-w", "%{http_connect}",
                                keyed.bystander.https + "/x")
        assert tunnel_elsewhere.stdout.strip() == "407"  # no open relay either
        plain = curl("--proxy", proxy, "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                     keyed.bystander.plain + "/x")
        assert plain.stdout.strip() == "407"
    assert len(keyed.bystander.seen) == before


def test_forward_key_is_accepted_and_never_goes_upstream(keyed: Lab):
    key = _key(keyed)
    proxy = keyed.daemon.forward_url.replace("http://", f"http://qonic:{key}@")
    result = curl("--proxy", proxy, "--cacert", str(keyed.world.proxy_ca), "-f",
                  "-H", f"{client_key.KEY_HEADER}: {key}", keyed.api + "/v1/echo")
    assert result.returncode == 0, result.stderr
    headers = {k.lower(): v for k, v in json.loads(result.stdout)["headers"].items()}
    assert "proxy-authorization" not in headers
    assert client_key.KEY_HEADER.lower() not in headers
    assert headers["authorization"] == "<valid bearer>"
    before = len(keyed.bystander.seen)
    plain = curl("--proxy", proxy, "-f", "-H", f"{client_key.KEY_HEADER}: {key}",
                 keyed.bystander.plain + "/plain")
    assert plain.returncode == 0, plain.stderr
    arrived = keyed.bystander.seen[before:]
    assert len(arrived) == 1
    assert not {"proxy-authorization", client_key.KEY_HEADER.lower()} & set(arrived[0]["headers"])
    assert key not in json.dumps(arrived)


def test_connect_with_undecodable_proxy_authorization_is_refused(keyed: Lab):
    """Bytes that are not UTF-8 must not turn the key check into an error that opens the tunnel."""
    raw = raw_exchange(keyed.forward_port,
                       f"CONNECT 127.0.0.1:{keyed.bystander.https_port} HTTP/1.1\r\n".encode()
                       + b"Proxy-Authorization: Bearer \xff\xfe" + _key(keyed).encode()
                       + b"\r\n\r\n", timeout=5)
    assert parse_response(raw)[0] == 407



def test_non_loopback_listen_without_key_exits_78(tmp_path: Path):
    config = {
        "qonic": {"api_url": "https://api.qonic.com"},
        "oauth": {"client_id": "x"},
        "proxy": {"listen_host": "0.0.0.0",  # noqa: S104 - refused, never bound
                  "port": 0, "ca_dir": str(tmp_path / "ca")},
        "token": {"cache_file": str(tmp_path / "t.json")},
    }
    path = write_toml(tmp_path / "c.toml", config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QONIC")}
    result = run_cli("run", "--config", str(path), env=env, timeout=30)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "client_key_file" in lines[0] and "Traceback" not in result.stderr



# ===== 4. Secrets never leak ===================================================================
_CAPTURING_BROWSER = """
import sys, urllib.request
sys.path.insert(0, {tests!r})
real = urllib.request.HTTPRedirectHandler.redirect_request
def record(self, req, fp, code, msg, headers, newurl):
    if "code=" in newurl:
        with open({out!r}, "a") as f:
            f.write(newurl + "\\n")
    return real(self, req, fp, code, msg, headers, newurl)
urllib.request.HTTPRedirectHandler.redirect_request = record
import browser
raise SystemExit(browser.main(sys.argv[1]))
"""


def test_full_debug_session_never_shows_a_secret(world: World, daemons: list[DaemonProcess]):
    from urllib.parse import parse_qs, urlsplit

    codes_file = world.tmp / "codes.txt"
    script = world.tmp / "capturing_browser.py"
    script.write_text(_CAPTURING_BROWSER.format(tests=str(TESTS), out=str(codes_file)))
    env = world.env(BROWSER=f"{sys.executable} {script} %s")
    daemon = world.daemon(env=env)
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    argv = Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes().decode(errors="replace")
    environ_names = ""  # the secret comes in via $QONIC_CLIENT_SECRET by design; not in argv

    answers: list[bytes] = []

    def call(url: str, **kw: Any) -> int:
        status, headers, body = http_request(url, **kw)
        answers.append(json.dumps(headers).encode() + body)
        return status

    reverse = daemon.reverse_url
    assert call(reverse + "/v1/projects?token=visible-query") == 200
    assert call(reverse + "/v1/echo", method="POST", data=b"x" * 100) == 200
    assert call(world.sandbox.url + "/v1/projects", proxy=daemon.forward_url,
                cafile=world.proxy_ca) == 200
    assert call(reverse + "/v1/no-such-thing") == 404
    world.sandbox.revoke_access_tokens()  # next call: 401 upstream -> refresh -> replay
    assert call(reverse + "/v1/projects") == 200
    assert world.sandbox.stats()["token"]["refresh_token"]["ok"] >= 1
    world.sandbox.revoke_grants()  # the refresh now fails: invalid_grant, then a new login
    call(reverse + "/v1/projects")
    wait_for(lambda: world.sandbox.stats()["token"]["refresh_token"]["error"] >= 1, 20,
             "a failed refresh")
    wait_for(lambda: world.browser_runs() >= 2, 20, "the second login")
    daemon.wait_logged_in()
    assert call(reverse + "/v1/projects") == 200, daemon.stderr_text()[-2000:]
    call(reverse + "/-/health")
    call(reverse + "/-/metrics")
    call(reverse + "/-/nope")
    login_page = curl("-sS", "-D", "-", reverse + "/-/login")  # a 302 to the authorize URL
    assert login_page.stdout.startswith("HTTP/1.1 302")
    answers.append(login_page.stdout.encode())
    status = world.cli("status", "--json", env=env)
    assert daemon.stop() == 0, daemon.stderr_text()[-2000:]

    codes = [parse_qs(urlsplit(line).query)["code"][0]
             for line in codes_file.read_text().splitlines()]
    state = world.sandbox._state  # test-only look at what the sandbox issued
    with state.lock:
        secrets = {"client secret": [world.client_secret], "code": codes,
                   "access token": list(state.access), "refresh token": list(state.refresh)}
    assert len(codes) >= 2 and len(secrets["access token"]) >= 3
    assert len(secrets["refresh token"]) >= 2
    outputs = {
        "daemon stderr": daemon.stderr_path.read_bytes().decode(errors="replace"),
        "daemon stdout": "".join(daemon.stdout),
        "argv": argv + environ_names,
        "answers": b"\n".join(answers).decode(errors="replace"),
        "status --json": status.stdout + status.stderr,
    }
    assert "logged in to Qonic" in outputs["daemon stderr"]  # we searched the real log
    for kind, values in secrets.items():
        for value in values:
            assert len(value) >= 16
            for where, text in outputs.items():
                assert value not in text, f"a {kind} appears in {where}"


# ===== 5. Files ================================================================================
def _tokens(tag: str, size: int) -> TokenSet:
    return TokenSet(access_token=tag + "a" * size, refresh_token=tag + "r" * size,
                    expires_at=2e9, scopes=("projects:read",), token_type="Bearer",
                    obtained_at=1.7e9)


_SAVER = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.store import TokenStore
store = TokenStore(Path({path!r}), "k")
i = 0
while True:
    tag = "%08d-" % i
    store.save(TokenSet(tag + "a" * 400000, tag + "r" * 400000, 2e9, ("projects:read",),
                        "Bearer", 1.7e9))
    if i == 0:
        print("saved", flush=True)
    i += 1
"""


def test_cache_replace_is_atomic_even_when_killed_mid_write(tmp_path: Path):
    path = tmp_path / "state" / "token.json"
    store = TokenStore(path, "k")
    store.save(_tokens("initial-", 400000))
    script = tmp_path / "saver.py"
    script.write_text(_SAVER.format(root=str(ROOT), path=str(path)))
    for round_ in range(4):
        saver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        try:
            assert saver.stdout is not None and saver.stdout.readline() == "saved\n"
            deadline = time.monotonic() + 0.3 + 0.1 * round_
            reads = 0
            while time.monotonic() < deadline:  # readers never see a partial file
                loaded = store.load()
                assert loaded is not None and len(loaded.access_token) > 400000
                reads += 1
            os.kill(saver.pid, signal.SIGKILL)
        finally:
            saver.kill()
            saver.wait(10)
        loaded = store.load()
        assert loaded is not None and loaded.access_token[9:] == "a" * 400000
        assert loaded.refresh_token is not None and loaded.refresh_token[:9] == \
            loaded.access_token[:9]
        assert reads > 5
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_cache_is_created_private_without_a_window(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    opened: list[tuple[int, int]] = []
    chmods: list[str] = []
    real_open, real_chmod = os.open, os.chmod

    def spy_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if flags & os.O_CREAT:
            opened.append((flags, mode))
        return real_open(path, flags, mode, **kw)

    def spy_chmod(path: Any, *args: Any, **kw: Any) -> None:
        chmods.append(str(path))
        real_chmod(path, *args, **kw)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", spy_chmod)
    path = tmp_path / "fresh" / "state" / "token.json"
    old = os.umask(0)
    try:
        TokenStore(path, "k").save(_tokens("x", 10))
    finally:
        os.umask(old)
    assert opened and all(flags & os.O_EXCL and mode == 0o600 for flags, mode in opened)
    assert not [p for p in chmods if p.endswith(".json") or ".tmp" in p]  # no chmod afterwards
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("problem", ["group-readable", "world-readable", "foreign"])
def test_cache_with_loose_permissions_or_another_owner_is_refused(tmp_path: Path, problem: str):
    path = tmp_path / "token.json"
    store = TokenStore(path, "k")
    store.save(_tokens("x", 10))
    if problem == "foreign":
        if os.getuid() != 0:
            pytest.skip("needs root to give a file to another user")
        os.chown(path, 4242, 4242)
    else:
        path.chmod(0o640 if problem == "group-readable" else 0o604)
    with pytest.raises(QonicProxyError) as err:
        store.load()
    message = str(err.value)
    assert str(path) in message and ("chmod 600" in message or "another user" in message)
    assert "xaaaa" not in message


# ===== 6. Bad input at the listeners ===========================================================

def test_oversized_request_headers_are_refused_with_431(lab: Lab):
    for port in (lab.reverse_port, lab.forward_port):
        head = (b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(1024))
                + b"\r\n")
        raw = raw_exchange(port, head)  # 1 MiB of headers
        assert parse_response(raw)[0] == 431, raw[:200]
    # endless header bytes without a blank line: cut off, never buffered without bound
    with socket.create_connection(("127.0.0.1", lab.reverse_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
        sent = 0
        with pytest.raises(OSError):
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        assert sent < 8 * 1024 * 1024
    assert _health_latency(lab) < 2


def test_slow_clients_do_not_starve_a_normal_client(lab: Lab):
    """300 connections that dribble a header byte every 0.3 s while /-/health is measured."""
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", lab.reverse_port), timeout=5)
            sock.sendall(b"GET /v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)
        latencies = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for sock in slow:
                sock.send(b"a")
            latencies.append(_health_latency(lab))
            time.sleep(0.3)
        assert max(latencies) < 1.0, latencies
    finally:
        for sock in slow:
            sock.close()
    assert lab.daemon.proc.poll() is None


# ===== 7. Upstream TLS =========================================================================
def test_forward_mode_refuses_an_untrusted_api_certificate(lab: Lab, daemons: list[DaemonProcess]):
    """A second daemon shares the lab's cached token but no longer trusts the sandbox's CA."""
    config = json.loads(json.dumps(lab.world.config))
    del config["qonic"]["ca_file"]
    config["proxy"]["forward_port"] = free_port()
    path = write_toml(lab.world.tmp / "untrusting.toml", config)
    untrusting = DaemonProcess(path, lab.world.env(), lab.world.tmp, [])
    daemons.append(untrusting)
    untrusting.wait_ready()
    assert untrusting.health()[0] == 200  # it holds a token: refusing is a TLS decision
    seen = api_traffic(lab.world)[1]
    result = curl("--proxy", untrusting.forward_url, "--cacert", str(lab.world.proxy_ca), "-sS",
                  "--suppress-connect-headers",
                  "-D", "-", lab.api + "/v1/projects", timeout=20)
    assert result.stdout.startswith("HTTP/1.1 502"), result.stdout[:300]
    body = json.loads(result.stdout.split("\n\n", 1)[1])
    assert body["error"] == "upstream_error" and "certificate" in body["message"].lower()
    assert api_traffic(lab.world)[1] == seen  # the token never reached the server

