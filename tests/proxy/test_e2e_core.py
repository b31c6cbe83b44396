"""End-to-end: the real daemon, real mitmproxy, the sandbox, a scripted browser, curl and urllib."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness import (
    Bystander,
    DaemonProcess,
    World,
    curl,
    free_port,
    http_request,
    run_cli,
    start_bystander,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def bystander(tmp_path: Path) -> Iterator[Bystander]:
    """A plain-HTTP and an HTTPS server on loopback that are not the Qonic API."""
    servers = start_bystander(tmp_path)
    try:
        yield servers
    finally:
        servers.stop()


def test_login_with_browser_then_reverse_mode_with_curl(world: World, logged_in: DaemonProcess):
    assert world.browser_runs() == 1
    result = curl("-f", logged_in.reverse_url + "/v1/projects")
    assert result.returncode == 0, result.stderr
    assert any(p["id"] == "p-1001" for p in json.loads(result.stdout))
    assert world.sandbox.stats()["api"]["ok"] >= 1


def test_client_authorization_header_is_replaced(world: World, logged_in: DaemonProcess):
    status, _, body = http_request(logged_in.reverse_url + "/v1/echo",
                                   headers={"Authorization": "Bearer attacker-chosen",
                                            "X-Client-Session-Id": "abc-123"})
    assert status == 200
    echoed = json.loads(body)["headers"]
    headers = {k.lower(): v for k, v in echoed.items()}
    assert headers["authorization"] == "<valid bearer>"
    assert headers["x-client-session-id"] == "abc-123"  # unknown headers pass untouched


def test_forward_mode_intercepts_only_the_api(world: World, logged_in: DaemonProcess,
                                              bystander: Bystander):
    via = ["--proxy", logged_in.forward_url]
    api = curl("-f", *via, "--cacert", str(world.proxy_ca), world.sandbox.url + "/v1/projects")
    assert api.returncode == 0, api.stderr
    # A different HTTPS host is tunnelled: the client sees that server's own certificate.
    other = curl("-f", *via, "--cacert", str(bystander.ca_file), bystander.https + "/x",
                 "-H", "Authorization: Bearer mine")
    assert other.returncode == 0, other.stderr
    # (the API host is 127.0.0.1 here, and plain HTTP to the API host is refused: use a name)
    plain = curl("-f", *via, bystander.plain.replace("127.0.0.1", "localhost") + "/y")
    assert plain.returncode == 0, plain.stderr
    assert len(bystander.seen) == 2
    assert "authorization" not in bystander.seen[1]["headers"]  # plain HTTP got no token
    assert bystander.seen[0]["headers"]["authorization"] == "Bearer mine"  # tunnel untouched


def test_python_requests_through_both_listeners(world: World, logged_in: DaemonProcess):
    session = requests.Session()
    session.trust_env = False
    reverse = session.get(logged_in.reverse_url + "/v1/projects/p-1001/models", timeout=30)
    assert reverse.status_code == 200
    proxies = {"https": logged_in.forward_url}
    forward = session.get(world.sandbox.url + "/v1/projects", proxies=proxies,
                          verify=str(world.proxy_ca), timeout=30)
    assert forward.status_code == 200


def test_restart_reuses_cached_token_without_browser(world: World, logged_in: DaemonProcess,
                                                     daemons: list[DaemonProcess]):
    assert logged_in.stop() == 0
    again = world.daemon()
    daemons.append(again)
    again.wait_ready()
    assert again.health()[0] == 200  # usable at once: no login needed
    assert http_request(again.reverse_url + "/v1/projects")[0] == 200
    assert world.browser_runs() == 1


def test_token_cache_is_private(world: World, logged_in: DaemonProcess):
    assert stat.S_IMODE(world.cache_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(world.cache_file.parent.stat().st_mode) == 0o700
    cached = world.cache_file.read_text()
    assert world.client_secret not in cached


def test_streaming_upload_and_download(world: World, logged_in: DaemonProcess):
    from qonic_proxy.sandbox.patterns import pattern_sha256

    size = 64 * 1024 * 1024
    result = curl("-f", "-o", "/dev/null", "-w", "%{size_download}",
                  f"{logged_in.reverse_url}/v1/projects/p-1001/models/m-structure/download"
                  f"?size={size}")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == size
    blob = os.urandom(1024) * (8 * 1024)  # 8 MiB, streamed by curl from a file
    upload = world.tmp / "upload.bin"
    upload.write_bytes(blob)
    posted = curl("-f", "-X", "POST", "-T", str(upload), logged_in.reverse_url + "/v1/upload")
    assert posted.returncode == 0, posted.stderr
    import hashlib

    assert json.loads(posted.stdout) == {"bytes": len(blob),
                                         "sha256": hashlib.sha256(blob).hexdigest()}
    assert pattern_sha256(1) != ""  # the pattern helper exists for the benchmark


def test_health_and_metrics(world: World, logged_in: DaemonProcess):
    status, body = logged_in.health()
    assert status == 200 and body["logged_in"] is True and body["expires_in"] > 0
    http_request(logged_in.reverse_url + "/v1/projects")
    status, headers, text = http_request(logged_in.reverse_url + "/-/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'qonic_proxy_requests_total{listener="reverse",status_class="2xx"}' in text.decode()
    assert 'qonic_proxy_logins_total{outcome="ok"} 1' in text.decode()


# ----- error paths -----------------------------------------------------------------------
def test_login_denied_is_reported_and_daemon_keeps_running(world: World,
                                                           daemons: list[DaemonProcess]):
    daemon = world.daemon(env=world.env(BROWSER_DECISION="deny"))
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: "access_denied" in daemon.stderr_text(), 20, "the denial in the log")
    status, body = daemon.health()
    assert status == 503 and "qonic-proxy login" in body["action"]
    status, _, raw = http_request(daemon.reverse_url + "/v1/projects")
    assert status == 401 and json.loads(raw)["error"] == "login_required"
    assert daemon.proc.poll() is None


def test_authorize_url_is_shown_even_at_log_level_error(world: World,
                                                         daemons: list[DaemonProcess]):
    daemon = world.daemon("--log-level", "error", env=world.env(BROWSER_DECISION="ignore"))
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: "/v1/auth/authorize?" in daemon.stderr_text(), 20, "the authorize URL")
    wait_for(lambda: world.browser_runs() == 1, 20, "the browser to be started as well")


def test_wrong_client_secret_is_a_clear_login_error(world: World, daemons: list[DaemonProcess]):
    daemon = world.daemon(env=world.env(QONIC_CLIENT_SECRET="wrong-secret"))
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: "invalid_client" in daemon.stderr_text(), 20, "invalid_client in the log")
    assert "wrong-secret" not in daemon.stderr_text()
    assert daemon.health()[0] == 503


def test_upstream_down_gives_json_502(world: World, logged_in: DaemonProcess):
    world.sandbox.stop()
    status, headers, body = http_request(logged_in.reverse_url + "/v1/projects")
    assert status == 502
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"] == "upstream_error"
    assert logged_in.proc.poll() is None


def test_untrusted_upstream_certificate_is_refused(world: World, logged_in: DaemonProcess,
                                                   daemons: list[DaemonProcess]):
    logged_in.stop()
    seen_before = world.sandbox.stats()["authorization_headers_seen"]
    del world.config["qonic"]["ca_file"]  # the sandbox's CA is no longer trusted
    daemon = world.daemon()
    daemons.append(daemon)
    daemon.wait_ready()
    status, _, body = http_request(daemon.reverse_url + "/v1/projects")
    assert status == 502
    assert "certificate" in json.loads(body)["message"].lower()
    assert world.sandbox.stats()["authorization_headers_seen"] == seen_before


def test_port_in_use_is_one_sentence_exit_1(world: World):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        world.config["proxy"]["port"] = busy.getsockname()[1]
        result = world.cli("run")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "address already in use" in last and "[proxy] port" in last
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("oauth", "colour", "blue", "colour"),
    ("proxy", "port", "eighty", "port"),
    ("oauth", "client_id", None, "client_id"),
    ("qonic", "api_url", "http://api.example.com", "api_url"),
])
def test_bad_config_exits_78_naming_the_key(world: World, section, key, value, expected):
    if value is None:
        del world.config[section][key]
    else:
        world.config[section][key] = value
    result = world.cli("run")
    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(world.config_path) in lines[0]


def test_plain_http_forward_request_to_api_host_is_refused(world: World,
                                                           logged_in: DaemonProcess):
    port = world.sandbox.url.rsplit(":", 1)[1]
    status, _, body = http_request(f"http://127.0.0.1:{port}/v1/projects",
                                   proxy=logged_in.forward_url)
    assert status == 403 and json.loads(body)["error"] == "plain_http_refused"


def test_unused_free_port_helper():
    assert 0 < free_port() < 65536


def test_demo_runs_once_and_falls_back_to_free_ports(world: World):
    """The README's main job; with its ports busy it picks free ones (forward stays on)."""
    import socket

    with socket.socket() as busy_reverse, socket.socket() as busy_forward:
        busy_reverse.bind(("127.0.0.1", 0))
        busy_forward.bind(("127.0.0.1", 0))
        busy_reverse.listen()
        busy_forward.listen()
        ports = [str(s.getsockname()[1]) for s in (busy_reverse, busy_forward)]
        result = run_cli("demo", "--once", "--port", ports[0], "--forward-port", ports[1],
                         env=world.env(), timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "-> 200" in result.stdout
    listening = next(line for line in result.stdout.splitlines() if "is listening" in line)
    forward_port = int(listening.rsplit(":", 1)[1])
    assert forward_port not in (0, int(ports[1]))


def test_api_trusts_a_ca_given_only_through_ssl_cert_file(world: World,
                                                          daemons: list[DaemonProcess]):
    """One trust decision: the system store (here $SSL_CERT_FILE) counts for mitmproxy too."""
    import certifi

    bundle = world.tmp / "system-bundle.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n"
                       + world.sandbox.ca_file.read_bytes())
    del world.config["qonic"]["ca_file"]  # trusted only through the daemon's environment
    daemon = world.daemon(env=world.env(SSL_CERT_FILE=str(bundle)))
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    status, _, body = http_request(daemon.reverse_url + "/v1/projects")  # through mitmproxy
    assert status == 200, body[:300]
    assert any(p["id"] == "p-1001" for p in json.loads(body))
