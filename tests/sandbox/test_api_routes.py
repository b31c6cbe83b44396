"""The API look-alikes: bearer and scope checks, revocation, expiry, streamed bodies."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import time
from collections.abc import Iterator

import pytest
import requests

from qonic_proxy.sandbox.patterns import pattern_bytes, pattern_sha256
from tests.sandbox.helpers import (
    Client,
    assert_error,
)

SIZE = 50 * 1000 * 1000



def test_api_rejects_missing_bad_and_revoked_tokens(client: Client) -> None:
    r = client.get("/v1/projects")
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    assert client.api("/v1/projects", "made-up").status_code == 401
    r = client.get("/v1/projects", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    tokens = client.login()
    client.sb.revoke_access_tokens()
    assert client.api("/v1/projects", tokens["access_token"]).status_code == 401
    r = client.refresh(tokens["refresh_token"])  # refresh survives an access revocation
    assert r.status_code == 200
    fresh = r.json()
    assert client.api("/v1/projects", fresh["access_token"]).status_code == 200
    client.sb.revoke_grants()
    assert client.api("/v1/projects", fresh["access_token"]).status_code == 401
    assert_error(client.refresh(fresh["refresh_token"]), 400, "invalid_grant")
    api = client.sb.stats()["api"]
    assert api["unauthorized"] == 5 and api["ok"] == 1


def test_insufficient_scope_is_403(client: Client) -> None:
    verifier = secrets.token_urlsafe(48)
    r = client.exchange(client.code(verifier, scope="projects:read"), verifier)
    token = r.json()["access_token"]
    assert client.api("/v1/projects", token).status_code == 200
    r = client.api("/v1/projects/p/models", token)
    assert r.status_code == 403
    assert r.json()["error"] == "insufficient_scope"
    assert client.api("/v1/upload", token, method="POST", data=b"x").status_code == 403
    assert client.api("/v1/echo", token).status_code == 200  # no scope needed
    assert client.sb.stats()["api"]["forbidden"] == 2


def test_access_token_expires(client: Client) -> None:
    client.sb.set_access_token_lifetime(0.3)
    tokens = client.login()
    assert tokens["expires_in"] == 0
    deadline = time.monotonic() + 10
    while client.api("/v1/projects", tokens["access_token"]).status_code == 200:
        assert time.monotonic() < deadline, "the short-lived token never expired"
        time.sleep(0.05)
    assert client.api("/v1/projects", tokens["access_token"]).status_code == 401


def test_echo_reports_what_arrived(client: Client) -> None:
    token = client.login()["access_token"]
    r = client.api(
        "/v1/echo?a=1&b=x%20y",
        token,
        method="PATCH",
        data=b"hello",
        headers={"X-Client-Session-Id": "abc"},
    )
    assert r.status_code == 200
    echo = r.json()
    assert echo["method"] == "PATCH" and echo["path"] == "/v1/echo"
    assert echo["query"] == "a=1&b=x%20y"
    assert echo["headers"]["X-Client-Session-Id"] == "abc"
    assert echo["headers"]["Authorization"] == "<valid bearer>"
    assert token not in r.text
    assert echo["bytes"] == 5 and echo["sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_export_result_redirects_elsewhere(make_client) -> None:
    c = make_client(export_redirect_url="https://127.0.0.2:9/files/export.ifc?sig=1")
    token = c.login()["access_token"]
    r = c.api("/v1/projects/p/models/m/export-ifc/op-1/result", token)
    assert r.status_code == 302
    assert r.headers["Location"] == "https://127.0.0.2:9/files/export.ifc?sig=1"


@pytest.mark.parametrize("chunked", [False, True])
def test_streaming_download(client: Client, chunked: bool) -> None:
    token = client.login()["access_token"]
    path = f"/v1/projects/p/models/m/download?size={SIZE}" + ("&chunked=1" if chunked else "")
    with client.api(path, token, stream=True) as r:
        assert r.status_code == 200
        if chunked:
            assert r.headers["Transfer-Encoding"] == "chunked"
            assert "Content-Length" not in r.headers
        else:
            assert r.headers["Content-Length"] == str(SIZE)
        digest = hashlib.sha256()
        n = 0
        for piece in r.iter_content(1 << 20):
            digest.update(piece)
            n += len(piece)
    assert n == SIZE
    assert digest.hexdigest() == pattern_sha256(SIZE)


def test_slow_download_has_delays_between_pieces(client: Client) -> None:
    token = client.login()["access_token"]
    started = time.monotonic()
    r = client.api("/v1/projects/p/models/m/download?size=200000&chunk_delay=0.1", token)
    assert r.status_code == 200 and len(r.content) == 200000
    assert time.monotonic() - started >= 0.3  # four 64 KiB pieces, three pauses


def test_a_slow_download_does_not_block_other_requests(client: Client, capfd) -> None:
    token = client.login()["access_token"]
    slow = client.api(
        "/v1/projects/p/models/m/download?size=2000000&chunk_delay=0.5", token, stream=True
    )
    try:
        assert slow.status_code == 200
        assert next(slow.iter_content(1000)) == pattern_bytes(0, 1000)
        other = requests.Session()
        other.trust_env = False
        started = time.monotonic()
        r = other.get(
            client.sb.url + "/v1/projects",
            headers={"Authorization": f"Bearer {token}"},
            verify=str(client.sb.ca_file),
            timeout=10,
        )
        other.close()
        assert r.status_code == 200 and time.monotonic() - started < 0.5
    finally:
        slow.close()  # the client goes away mid-download: the server must shrug
    r = client.api("/v1/projects", token)
    assert r.status_code == 200
    client.sb.stop()
    assert capfd.readouterr().err == ""


def test_streaming_upload_chunked_and_with_length(client: Client) -> None:
    token = client.login()["access_token"]

    def pieces() -> Iterator[bytes]:
        for offset in range(0, SIZE, 1 << 20):
            yield pattern_bytes(offset, min(1 << 20, SIZE - offset))

    r = client.api("/v1/upload", token, method="POST", data=pieces())
    assert r.status_code == 200, r.text
    assert r.json() == {"bytes": SIZE, "sha256": pattern_sha256(SIZE)}
    body = os.urandom(3 * 1000 * 1000 + 7)
    r = client.api("/v1/upload", token, method="PUT", data=io.BytesIO(body))
    assert r.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@pytest.mark.parametrize("chunked", ["0", "1"])
def test_download_reset_after_resets_mid_body(client: Client, chunked: str) -> None:
    token = client.login()["access_token"]
    r = client.api(f"/v1/projects/p/models/m/download?size=1000000&reset_after=200000"
                   f"&chunked={chunked}", token, stream=True)
    assert r.status_code == 200
    got = 0
    with pytest.raises(requests.RequestException):
        for piece in r.iter_content(65536):
            got += len(piece)
    assert got <= 200000
    assert client.api("/v1/projects/p/models/m/download?reset_after=-1", token).status_code == 400
    assert client.api("/v1/projects", token).status_code == 200  # the server is fine
