"""The unauthenticated test controls under /-/sandbox/, fault switches included."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from qonic_proxy.sandbox.faults import TokenFault
from tests.sandbox.helpers import (
    Client,
    assert_error,
)


def test_http_controls(client: Client) -> None:
    tokens = client.login()
    stats = client.get("/-/sandbox/stats").json()
    assert stats["token"]["authorization_code"]["ok"] == 1
    assert client.post("/-/sandbox/revoke?what=access").status_code == 200
    assert client.api("/v1/projects", tokens["access_token"]).status_code == 401
    assert client.post("/-/sandbox/revoke?what=everything").status_code == 400
    r = client.post("/-/sandbox/config", json={"access_token_lifetime": 42})
    assert r.status_code == 200
    r = client.refresh(tokens["refresh_token"])
    assert r.json()["expires_in"] == 42
    assert client.post("/-/sandbox/config", json={"nope": 1}).status_code == 400
    assert client.post("/-/sandbox/revoke?what=grants").status_code == 200
    assert_error(client.refresh(r.json()["refresh_token"]), 400, "invalid_grant")


def test_token_fault_status_with_retry_after_then_back_to_normal(client: Client) -> None:
    tokens = client.login()
    r = client.post("/-/sandbox/faults/token",
                    json={"mode": "status", "status": 429, "retry_after": 7, "seconds": 1})
    assert r.status_code == 200 and r.json()["token"]["active"]["status"] == 429
    r = client.refresh(tokens["refresh_token"])
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["error"] == "temporarily_unavailable"
    r = client.post("/-/sandbox/faults/token", json={"mode": "status", "seconds": 0.5})
    r = client.refresh(tokens["refresh_token"])
    assert r.status_code == 503 and "Retry-After" not in r.headers
    time.sleep(0.6)
    r = client.refresh(tokens["refresh_token"])  # the faults did not spend the refresh token
    assert r.status_code == 200, r.text
    stats = client.get("/-/sandbox/stats").json()
    assert stats["faults"]["token"] == {"active": None, "remaining": 0.0, "requests": 1}
    assert stats["refresh_token_reused"] == 0
    assert stats["token"]["refresh_token"] == {"ok": 1, "error": 0}


def test_token_fault_reset_and_hang(client: Client) -> None:
    tokens = client.login()
    client.post("/-/sandbox/faults/token", json={"mode": "reset", "seconds": 30})
    with pytest.raises(requests.ConnectionError):
        client.refresh(tokens["refresh_token"])
    client.post("/-/sandbox/faults/token", json={"mode": "hang", "seconds": 30, "hang": 2})
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        client.session.post(client.sb.url + "/v1/auth/token", timeout=0.5,
                            data={"grant_type": "refresh_token"})
    assert time.monotonic() - started < 2
    with pytest.raises(requests.ConnectionError):  # after the hang: closed, never answered
        client.session.post(client.sb.url + "/v1/auth/token", timeout=10,
                            data={"grant_type": "refresh_token"})
    assert client.get("/-/sandbox/faults").json()["token"]["requests"] == 2  # since the hang
    assert client.post("/-/sandbox/faults/token", json={"mode": "off"}).status_code == 200
    assert client.refresh(tokens["refresh_token"]).status_code == 200
    assert client.sb.stats()["faults"]["token"]["active"] is None


def test_bad_token_fault_is_400(client: Client) -> None:
    for body in ({"mode": "status", "seconds": 5, "status": 404}, [1], None):
        r = client.post("/-/sandbox/faults/token", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith("bad token fault: ")


def test_token_fault_from_settings_and_stop_ends_a_hang(make_client) -> None:
    client = make_client(token_fault=TokenFault("hang", 60, hang=60))
    done: list[BaseException] = []

    def hanging() -> None:
        try:
            client.refresh("x")
        except requests.RequestException as exc:
            done.append(exc)

    thread = threading.Thread(target=hanging)
    thread.start()
    wait = time.monotonic() + 5
    while client.sb.stats()["faults"]["token"]["requests"] == 0 and time.monotonic() < wait:
        time.sleep(0.02)
    started = time.monotonic()
    client.sb.stop()
    thread.join(10)
    assert done and time.monotonic() - started < 6
