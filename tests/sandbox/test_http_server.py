"""HTTP plumbing: quiet logs without secrets, keep-alive, smuggling guard, prompt stop."""

from __future__ import annotations

import http.client
import secrets
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

import pytest

from tests.sandbox.helpers import (
    SECRET,
    Client,
    s256,
)


def test_secrets_never_in_log_lines(make_client, capfd) -> None:
    c = make_client(verbose=True)
    verifier = secrets.token_urlsafe(48)
    code = c.code(verifier)
    tokens = c.exchange(code, verifier).json()
    c.api("/v1/projects?x=querytext", tokens["access_token"])
    c.refresh(tokens["refresh_token"])
    c.exchange(code, verifier)  # a replay, logged as an error
    err = capfd.readouterr().err
    assert "sandbox: GET /v1/auth/authorize 200" in err
    assert "sandbox: POST /v1/auth/token 200" in err
    assert "sandbox: GET /v1/projects 200" in err
    for secret in (code, verifier, s256(verifier), tokens["access_token"],
                   tokens["refresh_token"], SECRET, "querytext", "st-123"):
        assert secret not in err


def test_quiet_by_default(client: Client, capfd) -> None:
    client.login()
    assert capfd.readouterr().err == ""


def test_keep_alive_and_request_smuggling_guard(client: Client) -> None:
    token = client.login()["access_token"]
    host, port = urlsplit(client.sb.url).hostname, urlsplit(client.sb.url).port
    ctx = ssl.create_default_context(cafile=str(client.sb.ca_file))
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/v1/projects", headers={"Authorization": f"Bearer {token}"})
            r = conn.getresponse()
            assert r.status == 200 and r.read()
        first_sock = conn.sock
        conn.request("GET", "/v1/auth/scopes")
        assert conn.getresponse().read() and conn.sock is first_sock
        conn.putrequest("POST", "/v1/upload")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Length", "5")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"0\r\n\r\n")
        r = conn.getresponse()
        assert r.status == 400
        r.read()
    finally:
        conn.close()


def _sandbox_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("sandbox-")}


def test_a_stalled_handshake_does_not_block_others_and_stop_is_prompt(make_client) -> None:
    already_running = _sandbox_threads()  # other sandboxes' threads, if any, are not ours
    c = make_client()
    token = c.login()["access_token"]
    host, port = urlsplit(c.sb.url).hostname, urlsplit(c.sb.url).port
    stalled = socket.create_connection((host, port))  # never says hello
    try:
        r = c.api("/v1/projects", token)  # session keeps this connection alive afterwards
        assert r.status_code == 200
        started = time.monotonic()
        c.sb.stop()
        assert time.monotonic() - started < 3
        assert not _sandbox_threads() - already_running
        with pytest.raises(OSError):
            socket.create_connection((host, port), timeout=2).close()
    finally:
        stalled.close()
