"""End-to-end: the token's life in a running daemon (refresh, 401, re-login), verbs, signals, logs.

Every test runs the real daemon as a subprocess against the sandbox with short token lifetimes,
logs in through the real callback with the scripted browser, and calls it with real clients.
Waits poll a condition with a deadline; the few fixed waits are the token's own clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from qonic_proxy.records import replace
from qonic_proxy.sandbox.patterns import pattern_sha256
from qonic_proxy.tokens.service import refresh_due_at
from qonic_proxy.tokens.store import TokenStore, cache_key
from tests.harness import (
    BROWSER_SCRIPT,
    DaemonProcess,
    World,
    curl,
    free_port,
    http_request,
    make_world,
    wait_for,
)

pytestmark = pytest.mark.e2e


# ----- helpers -------------------------------------------------------------------------------
@pytest.fixture
def make(tmp_path: Path) -> Iterator[callable]:
    """make(**sandbox_settings) -> World; every sandbox made is stopped afterwards."""
    made: list[World] = []

    def build(**overrides: object) -> World:
        world = make_world(tmp_path / f"w{len(made)}", **overrides)
        made.append(world)
        return world

    try:
        yield build
    finally:
        for world in made:
            world.sandbox.stop()


def start(world: World, daemons: list[DaemonProcess], *args: str, login: bool = True,
          **env: str) -> DaemonProcess:
    daemon = world.daemon(*args, env=world.env(**env))
    daemons.append(daemon)
    daemon.wait_ready()
    if login:
        daemon.wait_logged_in()
    return daemon


def store_of(world: World) -> TokenStore:
    from qonic_proxy.config.loader import load_config

    world.write_config()
    return TokenStore(world.cache_file, cache_key(load_config(world.config_path)))


def token_stats(world: World, grant: str = "refresh_token") -> dict[str, int]:
    return world.sandbox.stats()["token"][grant]


def get(daemon: DaemonProcess, path: str = "/v1/projects", **kwargs: object,
        ) -> tuple[int, dict]:
    status, _, body = http_request(daemon.reverse_url + path, **kwargs)
    return status, json.loads(body) if body.strip() else {}


def metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def fixed_port(world: World) -> int:
    """Verbs find a running daemon through [proxy] port, so give it a real one."""
    port = free_port()
    world.config["proxy"]["port"] = port
    return port


def secrets_of(world: World) -> list[str]:
    tokens = store_of(world).load()
    assert tokens is not None
    return [s for s in (tokens.access_token, tokens.refresh_token, world.client_secret) if s]


# ----- 1. refresh storm ----------------------------------------------------------------------
def test_100_concurrent_requests_across_expiry_cause_one_refresh(
        make, daemons: list[DaemonProcess]):
    # A token endpoint that takes 0.5 s (as a real one far away may): the whole burst arrives
    # while the one refresh is under way, so every request has to wait for it.
    world = make(access_token_lifetime=6, refresh_delay=0.5)
    world.config["token"]["refresh_margin"] = 3
    daemon = start(world, daemons)
    world.sandbox.set_access_token_lifetime(3600)  # the refreshed token will not be due again
    first = store_of(world).load()
    due = refresh_due_at(first, 3)
    assert due is not None and due > time.time() + 0.5, "login took too long for this test"

    # 100 threads each start sending requests back to back the moment the refresh is due (the
    # daemon's own refresh-ahead wakes then too) and go on for a second.
    begin, end = due, due + 1.0
    results: list[int | str] = []
    after_due = 0
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def client() -> None:
        nonlocal after_due
        session = requests.Session()
        session.trust_env = False
        barrier.wait()
        time.sleep(max(0.0, begin - time.time()))
        while time.time() < end:
            sent = time.time()
            try:
                status: int | str = session.get(daemon.reverse_url + "/v1/projects",
                                                timeout=30).status_code
            except requests.RequestException as err:
                status = type(err).__name__
            with lock:
                results.append(status)
                after_due += sent >= due
        session.close()

    threads = [threading.Thread(target=client) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    failed = [r for r in results if r != 200]
    print(f"\nrefresh storm: {len(results)} requests ({after_due} sent after the refresh was "
          f"due), {len(failed)} failed, refreshes: {token_stats(world)}")
    assert len(results) >= 100 and after_due == len(results)
    assert failed == []
    assert token_stats(world) == {"ok": 1, "error": 0}
    assert world.sandbox.stats()["api"]["unauthorized"] == 0
    assert daemon.health()[1]["expires_in"] > 3000
    # single-flight inside the process, not merely the cross-process file lock catching it
    assert "another qonic-proxy process refreshed" not in daemon.stderr_text()


# ----- 2. revoked access token ---------------------------------------------------------------
def test_revoked_access_token_is_refreshed_and_request_replayed(
        world: World, logged_in: DaemonProcess):
    world.sandbox.revoke_access_tokens()
    status, body = get(logged_in)
    assert status == 200 and any(p["id"] == "p-1001" for p in body)
    stats = world.sandbox.stats()
    assert stats["api"]["unauthorized"] == 1
    assert token_stats(world) == {"ok": 1, "error": 0}
    # a small POST is replayed with its body
    world.sandbox.revoke_access_tokens()
    status, echoed = get(logged_in, "/v1/echo", method="POST", data=b"x" * 5000,
                         headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and echoed["bytes"] == 5000
    assert echoed["sha256"] == hashlib.sha256(b"x" * 5000).hexdigest()
    assert world.sandbox.stats()["api"]["unauthorized"] == 2
    assert token_stats(world) == {"ok": 2, "error": 0}


# ----- 3. revoked grant: login required, recovered without a restart -------------------------
def test_revoked_grant_needs_login_and_recovers_without_restart(
        world: World, daemons: list[DaemonProcess]):
    assert world.cli("login").returncode == 0  # the daemon starts logged in from the cache
    daemon = start(world, daemons, BROWSER_DECISION="ignore")  # its own browser never logs in
    runs = world.browser_runs()
    world.sandbox.revoke_grants()
    first, _ = get(daemon)
    assert first == 401
    # the failed refresh itself offers the login (opens the browser), before any other request
    wait_for(lambda: world.browser_runs() == runs + 1, 10, "the daemon to offer a login")
    status, body = get(daemon)
    assert status == 401 and body["error"] == "login_required"
    assert "qonic-proxy login" in body["message"] and "/-/login" in body["message"]
    status, health = daemon.health()
    assert status == 503 and health["status"] == "login_required"
    assert "/-/login" in health["action"] and health["last_refresh"]["outcome"] == "error"
    assert world.browser_runs() == runs + 1  # one offer, not one per request
    _, _, metrics = http_request(daemon.reverse_url + "/-/metrics")
    assert 'qonic_proxy_token_refreshes_total{outcome="error"} 1' in metrics.decode()

    # the user opens /-/login in a browser (the scripted one clicks "Allow")
    browser = subprocess.run([sys.executable, str(BROWSER_SCRIPT), daemon.reverse_url + "/-/login"],
                             env=world.env(), timeout=30, capture_output=True, text=True)
    assert browser.returncode == 0, browser.stderr
    daemon.wait_logged_in(10)
    assert get(daemon)[0] == 200
    assert daemon.proc.poll() is None  # the same process all along
    assert token_stats(world, "authorization_code")["ok"] == 2


# ----- 4. the login verb while the daemon runs -----------------------------------------------
def test_login_verb_token_is_picked_up_by_running_daemon(world: World,
                                                         daemons: list[DaemonProcess]):
    fixed_port(world)
    daemon = start(world, daemons)
    world.sandbox.revoke_grants()  # the daemon's token is dead but it does not know yet
    result = world.cli("login", timeout=40)
    assert result.returncode == 0, result.stderr
    assert "Logged in" in result.stdout
    wait_for(lambda: "picked up a new token" in daemon.stderr_text(), 5, "the daemon to adopt it")
    unauthorized = world.sandbox.stats()["api"]["unauthorized"]
    assert get(daemon)[0] == 200
    assert world.sandbox.stats()["api"]["unauthorized"] == unauthorized  # the new token, at once
    assert token_stats(world) == {"ok": 0, "error": 0}


def test_login_verb_joins_the_daemons_pending_login(world: World, daemons: list[DaemonProcess]):
    fixed_port(world)
    daemon = start(world, daemons, login=False, BROWSER_DECISION="ignore")
    wait_for(lambda: daemon.health()[1]["login_in_progress"], 10, "the daemon's login offer")
    assert daemon.health()[0] == 503
    result = world.cli("login", timeout=40)  # its $BROWSER approves
    assert result.returncode == 0, result.stderr
    pending = [line.split("browser: ", 1)[1].strip() for line in daemon.stderr_text().splitlines()
               if "login needed: open this URL" in line]
    assert pending and pending[-1] in result.stderr  # the daemon's own authorize URL
    assert daemon.health()[0] == 200 and get(daemon)[0] == 200
    assert token_stats(world, "authorization_code")["ok"] == 1


# ----- 5. two daemons, one cache -------------------------------------------------------------
def test_two_daemons_sharing_a_cache_spend_each_refresh_token_once(
        world: World, daemons: list[DaemonProcess]):
    world.sandbox.set_access_token_lifetime(4)  # due every 2 s (half-life rule)
    world.config["token"]["refresh_margin"] = 60
    first = start(world, daemons)
    logged_in_at = store_of(world).load().obtained_at
    world.config["proxy"]["forward_port"] = free_port()
    second = start(world, daemons)  # same cache file and client, other ports
    assert second.health()[0] == 200  # logged in from the shared cache
    statuses: list[int] = []
    began = time.monotonic()
    while time.monotonic() - began < 5:
        for daemon in (first, second):
            statuses.append(get(daemon)[0])
        time.sleep(0.05)
    stats = token_stats(world)
    print(f"\ntwo daemons, 5 s: {len(statuses)} requests, refreshes {stats}")
    assert set(statuses) == {200}
    assert stats["error"] == 0  # a reused refresh token would have been refused (and revoked)
    lived = time.time() - logged_in_at
    assert 2 <= stats["ok"] <= lived / 2 + 1  # one per 2 s of the grant's life, not per daemon
    assert world.sandbox.stats()["api"]["unauthorized"] == 0


# ----- 6. SIGTERM ----------------------------------------------------------------------------
def test_sigterm_lets_a_slow_download_finish_and_refuses_new_connections(
        world: World, logged_in: DaemonProcess, tmp_path: Path):
    port = int(logged_in.reverse_url.rsplit(":", 1)[1])
    # No UDP (HTTP/3) listener beside the TCP one: its Rust threads made exits segfault.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    size = 2 * 1024 * 1024  # 32 pieces of 64 KiB, 60 ms apart: about 2 s, streamed
    out = tmp_path / "download.bin"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    download = subprocess.Popen(
        ["curl", "-sS", "-f", "--max-time", "30", "-o", str(out),
         f"{logged_in.reverse_url}/v1/projects/p-1001/models/m-1/download"
         f"?size={size}&chunk_delay=0.06"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() and out.stat().st_size > 0, 10, "the download to start")
        logged_in.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except (ConnectionRefusedError, ConnectionResetError):
                return True  # a reset: the connect raced the listener's close
            return False

        wait_for(refused, 2, "the listener to close")
        assert download.poll() is None  # still downloading while new connections are refused
        assert download.wait(30) == 0, download.stderr.read()
    finally:
        if download.poll() is None:
            download.kill()
            download.wait()
    assert out.stat().st_size == size
    assert hashlib.sha256(out.read_bytes()).hexdigest() == pattern_sha256(size)
    assert logged_in.proc.wait(15) == 0
    assert "still in flight" not in logged_in.stderr_text()


# ----- 7. verbs, SIGHUP, expiry sources, logs, metrics ---------------------------------------
def test_status_and_logout(world: World, daemons: list[DaemonProcess]):
    fixed_port(world)
    result = world.cli("status")
    assert result.returncode == 1 and result.stdout.startswith("NOT logged in")
    report = json.loads(world.cli("status", "--json").stdout)
    assert report["logged_in"] is False and report["daemon"] is None

    daemon = start(world, daemons)
    text = world.cli("status")
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.startswith("logged in") and str(world.cache_file) in text.stdout
    assert f"daemon:        running (pid {daemon.proc.pid}), reverse {daemon.reverse_url}" \
        in text.stdout
    result = world.cli("status", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["logged_in"] is True and report["cache_file"] == str(world.cache_file)
    assert set(report["scopes"]) == {"projects:read", "models:read", "models:write"}
    assert 3500 < report["expires_in"] <= 3600 and report["refresh_token"] is True
    assert report["daemon"]["listeners"]["reverse"] == daemon.reverse_url
    assert report["daemon"]["pid"] == daemon.proc.pid
    for secret in secrets_of(world):
        assert secret not in text.stdout + result.stdout

    logout = world.cli("logout")
    assert logout.returncode == 0 and not world.cache_file.exists()
    wait_for(lambda: daemon.health()[0] == 503, 2.5, "the daemon to need a login")
    assert daemon.health()[1]["status"] == "login_required"
    assert world.cli("status").returncode == 1


def test_token_verb_refreshes_when_due_under_the_file_lock(make, monkeypatch):
    world = make(access_token_lifetime=4)  # due 2 s after issue
    world.config["token"]["refresh_margin"] = 60
    assert world.cli("login").returncode == 0
    store = store_of(world)
    cached = store.load()
    result = world.cli("token")
    assert result.returncode == 0 and result.stdout.strip() == cached.access_token
    assert token_stats(world) == {"ok": 0, "error": 0}
    status = curl("-f", "-H", "Authorization: Bearer " + result.stdout.strip(),
                  "--cacert", str(world.sandbox.ca_file), world.sandbox.url + "/v1/projects")
    assert status.returncode == 0, status.stderr  # usable as it is
    wait_for(lambda: refresh_due_at(cached, 60) <= time.time(), 5, "the token to be due")

    # A sibling holds the lock and refreshes meanwhile: the verb must wait and take its result,
    # not spend the (rotated, now used) refresh token a second time.
    from qonic_proxy.config.loader import load_config
    from qonic_proxy.oauth.client import refresh_tokens

    monkeypatch.setenv("QONIC_CLIENT_SECRET", world.client_secret)
    cfg = load_config(world.config_path)
    with store.refresh_lock():
        verb = subprocess.Popen([sys.executable, "-m", "qonic_proxy", "token", "--config",
                                 str(world.config_path)], env=world.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        fd_dir = Path(f"/proc/{verb.pid}/fd")

        def waiting_for_lock() -> bool:
            try:
                return any(os.readlink(fd) == str(store.lock_path) for fd in fd_dir.iterdir())
            except OSError:
                return False

        try:
            wait_for(waiting_for_lock, 10, "the verb to wait for the refresh lock")
            sibling = refresh_tokens(cfg, cached.refresh_token)
            store.save(sibling)
        except BaseException:
            verb.kill()
            raise
    out, err = verb.communicate(timeout=30)
    assert verb.returncode == 0, err
    assert out.strip() == sibling.access_token
    assert token_stats(world) == {"ok": 1, "error": 0}

    # due again, nobody else refreshing: the verb refreshes itself and stores the rotation
    wait_for(lambda: refresh_due_at(sibling, 60) <= time.time(), 5, "the token to be due")
    result = world.cli("token")
    assert result.returncode == 0, result.stderr
    latest = store.load()
    assert result.stdout.strip() == latest.access_token != sibling.access_token
    assert latest.refresh_token != sibling.refresh_token
    assert token_stats(world) == {"ok": 2, "error": 0}


def test_sighup_rereads_the_cache(world: World, logged_in: DaemonProcess):
    store = store_of(world)
    before = world.cache_file.stat().st_mtime_ns
    tokens = store.load()
    store.save(replace(tokens, expires_at=time.time() + 7777))
    os.utime(world.cache_file, ns=(before, before))  # invisible to the 1 s mtime watcher
    logged_in.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: logged_in.health()[1]["expires_in"] > 7000, 5, "the re-read token")
    assert "SIGHUP" in logged_in.stderr_text()
    assert logged_in.proc.poll() is None and get(logged_in)[0] == 200


def test_jwt_exp_schedules_the_refresh_and_metrics_show_it(make, daemons: list[DaemonProcess]):
    world = make(omit_expires_in=True, access_token_lifetime=4)
    world.config["token"]["refresh_margin"] = 60
    daemon = start(world, daemons)
    expires_in = daemon.health()[1]["expires_in"]
    assert expires_in is not None and 1 <= expires_in <= 4  # from the JWT's exp claim
    for _ in range(3):
        assert get(daemon)[0] == 200
    wait_for(lambda: token_stats(world)["ok"] >= 1, 6, "a refresh before the JWT expires")
    assert get(daemon)[0] == 200
    _, headers, raw = http_request(daemon.reverse_url + "/-/metrics")
    text = raw.decode()
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert metric(text, 'qonic_proxy_token_refreshes_total{outcome="ok"}') >= 1
    assert metric(text, 'qonic_proxy_logins_total{outcome="ok"}') == 1
    assert metric(text, 'qonic_proxy_requests_total{listener="reverse",status_class="2xx"}') >= 4
    assert metric(text, "qonic_proxy_upstream_latency_seconds_count") >= 4
    assert metric(text, 'qonic_proxy_upstream_latency_seconds_bucket{le="+Inf"}') >= 4
    assert 0 < metric(text, "qonic_proxy_token_expiry_seconds") <= 4
    assert world.sandbox.stats()["api"]["unauthorized"] == 0


def test_without_refresh_token_a_login_replaces_the_expiring_token(
        make, daemons: list[DaemonProcess]):
    world = make(issue_refresh_tokens=False, access_token_lifetime=4)
    world.config["token"]["refresh_margin"] = 60
    daemon = start(world, daemons)
    assert daemon.health()[1]["refresh_token"] is False
    first = store_of(world).load()
    wait_for(lambda: refresh_due_at(first, 60) <= time.time(), 5, "the token to be due")
    assert get(daemon)[0] == 200  # still valid: served, and a login is asked for
    wait_for(lambda: world.browser_runs() == 2, 10, "a second browser login")
    wait_for(lambda: token_stats(world, "authorization_code")["ok"] == 2, 10, "the new login")
    store = store_of(world)
    wait_for(lambda: store.load().access_token != first.access_token, 5, "the new token cached")
    status, health = daemon.health()
    assert status == 200 and health["expires_in"] is not None, daemon.stderr_text()[-4000:]
    assert get(daemon)[0] == 200
    assert token_stats(world) == {"ok": 0, "error": 0}
    assert world.browser_runs() == 2  # one login, not one per request


def test_json_log_has_one_access_line_per_request_and_no_secret(
        world: World, daemons: list[DaemonProcess]):
    daemon = start(world, daemons, "--log-format", "json")
    paths = ["/v1/projects?secret_param=hunter2", "/v1/projects/p-1001/models", "/v1/nothing"]
    statuses = [get(daemon, path)[0] for path in paths]
    assert statuses == [200, 200, 404]
    world.sandbox.revoke_access_tokens()  # one refresh + replay, still one line
    assert get(daemon)[0] == 200
    daemon.proc.send_signal(signal.SIGINT)  # Ctrl-C stops as gracefully as SIGTERM
    assert daemon.proc.wait(15) == 0
    daemon.stop()
    text = daemon.stderr_path.read_text()
    entries = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == "qonic_proxy.access"
              and "/v1/" in e["message"]]
    assert len(access) == 4
    for entry, status in zip(access, [*statuses, 200], strict=True):
        assert entry["method"] == "GET" and entry["status"] == status
        assert isinstance(entry["duration_ms"], float) and isinstance(entry["bytes"], int)
        assert "?" not in entry["message"] and entry.get("path", "/v1/").startswith("/v1/")
    assert "hunter2" not in text
    for secret in secrets_of(world):
        assert secret not in text


# ----- issue 10: an outage of the token endpoint ---------------------------------------------
def test_a_token_endpoint_outage_answers_503_and_keeps_the_login(
        world: World, daemons: list[DaemonProcess]):
    from qonic_proxy.oauth.tokenset import TokenSet

    closed = free_port()  # nothing listens there: every refresh is refused
    world.config["qonic"]["token_url"] = f"https://127.0.0.1:{closed}/v1/auth/token"
    now = time.time()
    store_of(world).save(TokenSet(access_token="expired-access", refresh_token="kept-refresh",
                                  expires_at=now - 10, scopes=(), token_type="Bearer",
                                  obtained_at=now - 100))
    daemon = start(world, daemons, login=False)
    status, headers, raw = http_request(daemon.reverse_url + "/v1/projects")
    body = json.loads(raw)
    assert status == 503 and body["error"] == "token_endpoint_unavailable"
    assert "connection refused" in body["message"] and int(headers["Retry-After"]) >= 1
    status, health = daemon.health()
    assert status == 503 and health["status"] == "token_endpoint_unavailable"
    assert health["login_in_progress"] is False and health["cache"]["saved"] is True
    _, _, metrics = http_request(daemon.reverse_url + "/-/metrics")
    assert metric(metrics.decode(),
                  'qonic_proxy_token_refresh_failures_total{reason="connection_refused"}') >= 1
    assert world.browser_runs() == 0
    assert store_of(world).load().refresh_token == "kept-refresh"
    assert "login needed" not in daemon.stderr_text()
