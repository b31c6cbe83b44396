"""The sandbox must be as strict as a real OAuth server, over real verified TLS.

Every rule is checked from the outside (HTTP over TLS on 127.0.0.1, verified against the
sandbox's throwaway CA), so a lenient sandbox cannot hide a lenient proxy.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from cryptography import x509

from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context
from qonic_proxy.sandbox.cli import main
from qonic_proxy.sandbox.patterns import pattern_bytes, pattern_sha256
from qonic_proxy.sandbox.settings import SandboxSettings

REDIRECT = "http://localhost:8765/callback"
CLIENT_ID = "sandbox-client"
SECRET = "sandbox-secret"
ALL_SCOPES = "projects:read models:read models:write"
REPO = Path(__file__).resolve().parent.parent


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Client:
    """A requests session that trusts only the sandbox CA and ignores proxy/CA env settings."""

    sb: Sandbox
    session: requests.Session

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.sb.url + path, allow_redirects=False, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.session.post(self.sb.url + path, allow_redirects=False, timeout=30, **kw)

    def authorize(self, verifier: str | None = None, **overrides: str) -> requests.Response:
        verifier = verifier or secrets.token_urlsafe(48)
        params = {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": ALL_SCOPES,
            "state": "st-123",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        params = {k: v for k, v in params.items() if v is not None}
        return self.get("/v1/auth/authorize?" + urlencode(params))

    def code(self, verifier: str, **overrides: str) -> str:
        """Run authorize (and approve consent when asked) and return the code."""
        r = self.authorize(verifier, **overrides)
        if r.status_code == 200:
            r = self.post(
                "/v1/auth/consent", data={"consent_id": consent_id(r.text), "decision": "approve"}
            )
        assert r.status_code == 302, r.text
        q = query_of(r.headers["Location"])
        assert q["state"] == overrides.get("state", "st-123")
        return q["code"]

    def token(self, **form: str) -> requests.Response:
        return self.post("/v1/auth/token", data=form)

    def exchange(self, code: str, verifier: str, **extra: str) -> requests.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        form.update(extra)
        return self.token(**{k: v for k, v in form.items() if v is not None})

    def login(self) -> dict:
        verifier = secrets.token_urlsafe(48)
        r = self.exchange(self.code(verifier), verifier)
        assert r.status_code == 200, r.text
        return r.json()

    def refresh(self, refresh_token: str, **extra: str) -> requests.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
        }
        form.update(extra)
        return self.token(**form)

    def api(self, path: str, token: str, method: str = "GET", **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}), Authorization=f"Bearer {token}")
        return self.session.request(
            method, self.sb.url + path, headers=headers, allow_redirects=False, timeout=60, **kw
        )


def consent_id(page: str) -> str:
    m = re.search(r'name="consent_id" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    started: list[tuple[Sandbox, requests.Session]] = []

    def factory(**settings) -> Client:
        settings.setdefault("cert_dir", tmp_path / f"certs{len(started)}")
        sb = Sandbox(SandboxSettings(**settings))
        sb.start()
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify; no env proxies
        session.verify = str(sb.ca_file) if sb.ca_file else True
        started.append((sb, session))
        return Client(sb, session)

    yield factory
    for sb, session in started:
        session.close()
        sb.stop()


@pytest.fixture
def client(make_client) -> Client:
    return make_client()


def assert_error(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == code, r.text
    assert r.json()["error_description"]


# -- local_ca ---------------------------------------------------------------------------------


def test_local_ca_files_and_certificate(tmp_path: Path) -> None:
    tls = make_server_tls(tmp_path / "ca")
    assert stat.S_IMODE(os.stat(tmp_path / "ca").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tls.key_file).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "127.0.0.2",
        "::1",
    }
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.issuer == ca.subject
    assert "PRIVATE" not in tls.ca_file.read_text() and "PRIVATE" not in tls.cert_file.read_text()


def _tls_roundtrip(ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, hostname: str) -> str:
    listener = socket.create_server(("127.0.0.1", 0))
    result: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"ok")
            except (ssl.SSLError, OSError):
                result.append("server-failed")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=hostname) as conn,
        ):
            return conn.recv(2).decode()
    finally:
        t.join(10)
        listener.close()


def test_local_ca_verifies_only_with_its_own_ca(tmp_path: Path) -> None:
    tls = make_server_tls(tmp_path / "a")
    other = make_server_tls(tmp_path / "b")
    trusting = ssl.create_default_context(cafile=str(tls.ca_file))
    for name in ("localhost", "127.0.0.1"):
        assert _tls_roundtrip(trusting, server_ssl_context(tls), name) == "ok"
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_roundtrip(trusting, server_ssl_context(other), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):  # a name the certificate does not carry
        _tls_roundtrip(trusting, server_ssl_context(tls), "api.qonic.com")


# -- content pattern --------------------------------------------------------------------------


def test_pattern_bytes_is_i_mod_251_at_any_offset() -> None:
    assert pattern_bytes(0, 600) == bytes(i % 251 for i in range(600))
    for offset, length in [(1, 10), (250, 3), (65535, 70000), (10**9 + 7, 300), (5, 0)]:
        assert pattern_bytes(offset, length) == bytes(
            (offset + i) % 251 for i in range(length)
        )
    whole = b"".join(pattern_bytes(o, min(65536, 300_000 - o)) for o in range(0, 300_000, 65536))
    assert hashlib.sha256(whole).hexdigest() == pattern_sha256(300_000)
    assert pattern_sha256(0) == hashlib.sha256(b"").hexdigest()
    with pytest.raises(ValueError):
        pattern_bytes(-1, 1)


# -- authorize and consent --------------------------------------------------------------------


def test_full_code_flow_with_consent_and_pkce(client: Client) -> None:
    verifier = secrets.token_urlsafe(64)
    r = client.authorize(verifier, state="a b&c=d/é")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.headers["X-Frame-Options"] == "DENY"
    assert 'action="/v1/auth/consent"' in r.text
    r = client.post(
        "/v1/auth/consent", data={"consent_id": consent_id(r.text), "decision": "approve"}
    )
    assert r.status_code == 302
    location = r.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    q = query_of(location)
    assert q["state"] == "a b&c=d/é"
    r = client.exchange(q["code"], verifier)
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == ALL_SCOPES
    assert body["access_token"] and body["refresh_token"]
    projects = client.api("/v1/projects", body["access_token"])
    assert projects.status_code == 200
    assert isinstance(projects.json(), list) and projects.json()
    pid = projects.json()[0]["id"]
    models = client.api(f"/v1/projects/{pid}/models", body["access_token"])
    assert models.status_code == 200 and models.json()[0]["id"]
    stats = client.sb.stats()
    assert stats["authorize"] == 1 and stats["consent"] == 1
    assert stats["token"]["authorization_code"] == {"ok": 1, "error": 0}
    assert stats["api"]["ok"] == 2
    assert stats["authorization_headers_seen"] == 2


def test_consent_deny_and_consent_id_is_single_use(client: Client) -> None:
    r = client.authorize()
    cid = consent_id(r.text)
    r = client.post("/v1/auth/consent", data={"consent_id": cid, "decision": "deny"})
    assert r.status_code == 302
    q = query_of(r.headers["Location"])
    assert q["error"] == "access_denied" and q["error_description"] and q["state"] == "st-123"
    assert "code" not in q
    r = client.post("/v1/auth/consent", data={"consent_id": cid, "decision": "approve"})
    assert r.status_code == 400 and "Location" not in r.headers
    r = client.post("/v1/auth/consent", data={"consent_id": "made-up", "decision": "approve"})
    assert r.status_code == 400 and "Location" not in r.headers


def test_auto_consent_redirects_straight_back(make_client) -> None:
    c = make_client(auto_consent=True)
    r = c.authorize()
    assert r.status_code == 302
    assert set(query_of(r.headers["Location"])) == {"code", "state"}


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": "http://localhost:8765/callback/"},
        {"redirect_uri": "http://localhost:8766/callback"},
        {"redirect_uri": "http://127.0.0.1:8765/callback"},
        {"redirect_uri": "http://localhost:8765/callback?x=1"},
        {"redirect_uri": None},
        {"client_id": "someone-else"},
        {"client_id": None},
    ],
)
def test_authorize_never_redirects_to_unregistered_uri(client: Client, overrides) -> None:
    r = client.authorize(**overrides)
    assert r.status_code == 400
    assert "Location" not in r.headers
    assert r.headers["Content-Type"].startswith("text/html")


def test_authorize_escapes_what_it_echoes(client: Client) -> None:
    evil = "http://localhost:8765/<script>alert(1)</script>"
    r = client.authorize(redirect_uri=evil)
    assert r.status_code == 400
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    r = client.authorize(client_id='"><img src=x onerror=alert(1)>')
    assert r.status_code == 400 and "<img" not in r.text


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"code_challenge": "a" * 129}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "projects:read admin"}, "invalid_scope"),
        ({"scope": ""}, "invalid_scope"),
        ({"scope": None}, "invalid_scope"),
    ],
)
def test_authorize_errors_redirect_with_state(client: Client, overrides, error) -> None:
    r = client.authorize(**overrides)
    assert r.status_code == 302, r.text
    q = query_of(r.headers["Location"])
    assert r.headers["Location"].startswith(REDIRECT + "?")
    assert q["error"] == error and q["error_description"] and q["state"] == "st-123"
    assert "code" not in q


# -- token endpoint ---------------------------------------------------------------------------


def test_bad_verifier_is_rejected_and_the_right_one_still_works(client: Client) -> None:
    verifier = secrets.token_urlsafe(48)
    code = client.code(verifier)
    assert_error(client.exchange(code, secrets.token_urlsafe(48)), 400, "invalid_grant")
    assert_error(client.exchange(code, "too-short"), 400, "invalid_grant")
    assert_error(client.exchange(code, verifier, code_verifier=None), 400, "invalid_request")
    assert client.exchange(code, verifier).status_code == 200
    assert client.sb.stats()["token"]["authorization_code"] == {"ok": 1, "error": 3}


def test_plain_pkce_verifier_equal_to_challenge_is_rejected(client: Client) -> None:
    verifier = secrets.token_urlsafe(48)
    code = client.code(verifier)
    # Sending the challenge itself as verifier is what a "plain" client would do.
    assert_error(client.exchange(code, s256(verifier)), 400, "invalid_grant")


def test_redirect_uri_must_be_identical_at_the_token_step(make_client) -> None:
    c = make_client(redirect_uris=(REDIRECT, "http://localhost:9999/cb"))
    verifier = secrets.token_urlsafe(48)
    code = c.code(verifier)
    for other in ("http://localhost:9999/cb", REDIRECT + "/", None):
        assert_error(c.exchange(code, verifier, redirect_uri=other), 400, "invalid_grant")
    assert c.exchange(code, verifier).status_code == 200


def test_reused_code_fails_and_revokes_its_tokens(client: Client) -> None:
    verifier = secrets.token_urlsafe(48)
    code = client.code(verifier)
    first = client.exchange(code, verifier)
    assert first.status_code == 200
    tokens = first.json()
    assert client.api("/v1/projects", tokens["access_token"]).status_code == 200
    assert_error(client.exchange(code, verifier), 400, "invalid_grant")
    r = client.api("/v1/projects", tokens["access_token"])
    assert r.status_code == 401
    assert_error(client.refresh(tokens["refresh_token"]), 400, "invalid_grant")


def test_expired_code_is_rejected(make_client) -> None:
    c = make_client(code_lifetime=0.05)
    verifier = secrets.token_urlsafe(48)
    code = c.code(verifier)
    time.sleep(0.1)  # the lifetime itself is what is tested: nothing to poll
    assert_error(c.exchange(code, verifier), 400, "invalid_grant")


def test_client_secret_only_in_the_form_body(client: Client) -> None:
    verifier = secrets.token_urlsafe(48)
    code = client.code(verifier)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    r = client.post("/v1/auth/token", data=form, auth=(CLIENT_ID, SECRET))
    assert_error(r, 401, "invalid_client")
    assert "form body" in r.json()["error_description"]
    # Two authentication methods at once are refused too (RFC 6749 2.3).
    r = client.post(
        "/v1/auth/token", data=dict(form, client_secret=SECRET), auth=(CLIENT_ID, SECRET)
    )
    assert_error(r, 401, "invalid_client")
    assert_error(client.token(**form), 401, "invalid_client")  # missing secret
    assert_error(client.token(**form, client_secret="wrong"), 401, "invalid_client")
    assert_error(client.token(**dict(form, client_id="other"), client_secret=SECRET), 401,
                 "invalid_client")
    # Failed client authentication does not burn the code.
    assert client.token(**form, client_secret=SECRET).status_code == 200


def test_token_endpoint_wants_a_form(client: Client) -> None:
    verifier = secrets.token_urlsafe(48)
    code = client.code(verifier)
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    assert_error(client.post("/v1/auth/token", json=body), 400, "invalid_request")
    r = client.post("/v1/auth/token?" + urlencode(body))
    assert_error(r, 400, "invalid_request")
    repeated = urlencode(body) + "&code=" + code
    r = client.post(
        "/v1/auth/token",
        data=repeated,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(r, 400, "invalid_request")
    assert_error(client.token(**dict(body, grant_type="password")), 400, "unsupported_grant_type")
    assert client.get("/v1/auth/token").status_code == 405
    assert client.token(**body).status_code == 200


def test_public_client_needs_no_secret(make_client) -> None:
    c = make_client(client_secret=None)
    verifier = secrets.token_urlsafe(48)
    r = c.exchange(c.code(verifier), verifier, client_secret=None)
    assert r.status_code == 200, r.text
    r = c.refresh(r.json()["refresh_token"], client_secret="")
    assert r.status_code == 200, r.text


# -- refresh tokens ---------------------------------------------------------------------------


def test_refresh_rotation_and_reuse_detection(client: Client) -> None:
    first = client.login()
    r = client.refresh(first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert client.api("/v1/projects", second["access_token"]).status_code == 200
    # The old refresh token is spent: presenting it again means it leaked.
    assert_error(client.refresh(first["refresh_token"]), 400, "invalid_grant")
    assert client.api("/v1/projects", second["access_token"]).status_code == 401
    assert client.api("/v1/projects", first["access_token"]).status_code == 401
    assert_error(client.refresh(second["refresh_token"]), 400, "invalid_grant")
    assert client.sb.stats()["token"]["refresh_token"] == {"ok": 1, "error": 2}


def test_refresh_scope_can_narrow_but_not_widen(client: Client) -> None:
    tokens = client.login()
    assert_error(
        client.refresh(tokens["refresh_token"], scope="projects:write"), 400, "invalid_scope"
    )
    r = client.refresh(tokens["refresh_token"], scope="projects:read")
    assert r.status_code == 200 and r.json()["scope"] == "projects:read"
    narrow = r.json()["access_token"]
    assert client.api("/v1/projects/p/models", narrow).status_code == 403


def test_refresh_needs_client_authentication(client: Client) -> None:
    tokens = client.login()
    assert_error(client.refresh(tokens["refresh_token"], client_secret="nope"), 401,
                 "invalid_client")
    assert_error(client.refresh("not-a-token"), 400, "invalid_grant")
    assert client.refresh(tokens["refresh_token"]).status_code == 200


def test_without_rotation_the_refresh_token_stays(make_client) -> None:
    c = make_client(rotate_refresh_tokens=False)
    tokens = c.login()
    for _ in range(2):
        r = c.refresh(tokens["refresh_token"])
        assert r.status_code == 200
        assert "refresh_token" not in r.json()
        assert c.api("/v1/projects", r.json()["access_token"]).status_code == 200


def test_no_refresh_tokens(make_client) -> None:
    c = make_client(issue_refresh_tokens=False)
    tokens = c.login()
    assert "refresh_token" not in tokens
    assert_error(c.refresh("anything"), 400, "unsupported_grant_type")


# -- API and revocation -----------------------------------------------------------------------


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


def test_scopes_are_public(client: Client) -> None:
    r = client.get("/v1/auth/scopes")
    assert r.status_code == 200
    names = {s["name"] for s in r.json()}
    assert names == {
        "projects:read",
        "projects:write",
        "models:read",
        "models:write",
        "issues:read",
        "libraries:read",
        "libraries:write",
    }


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


# -- streaming --------------------------------------------------------------------------------

SIZE = 50 * 1000 * 1000


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


# -- styles -----------------------------------------------------------------------------------


def test_camel_style_and_qonic_errors(make_client) -> None:
    c = make_client(token_style="camel", error_style="qonic")
    tokens = c.login()
    assert set(tokens) == {"accessToken", "tokenType", "expiresIn", "refreshToken", "scope"}
    assert c.api("/v1/projects", tokens["accessToken"]).status_code == 200
    r = c.refresh(tokens["refreshToken"])
    assert r.status_code == 200 and "refreshToken" in r.json()
    r = c.refresh(tokens["refreshToken"])
    assert r.status_code == 400
    assert set(r.json()) == {"errorDetails"} and "invalid_grant" in r.json()["errorDetails"]


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_jwt_style_tokens_carry_exp(make_client) -> None:
    c = make_client(omit_expires_in=True, access_token_lifetime=120)
    before = time.time()
    tokens = c.login()
    assert "expires_in" not in tokens
    parts = tokens["access_token"].split(".")
    assert len(parts) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in parts)
    assert json.loads(_b64decode(parts[0]))["alg"] == "HS256"
    claims = json.loads(_b64decode(parts[1]))
    assert before + 118 <= claims["exp"] <= time.time() + 121
    assert c.api("/v1/projects", tokens["access_token"]).status_code == 200
    # A JWT that looks right but was never issued is still rejected.
    tail = "AA" if parts[2][-2:] != "AA" else "BB"
    forged = ".".join([parts[0], parts[1], parts[2][:-2] + tail])
    assert c.api("/v1/projects", forged).status_code == 401


# -- test controls, logging, connections ------------------------------------------------------


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


def test_plain_http_mode(make_client) -> None:
    c = make_client(tls=False)
    assert c.sb.url.startswith("http://127.0.0.1:") and c.sb.ca_file is None
    assert c.get("/v1/auth/scopes").status_code == 200


def test_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ValueError):
        Sandbox(SandboxSettings(host="0.0.0.0"))  # noqa: S104 (that is the point)


# -- the CLI verb -----------------------------------------------------------------------------


def test_main_in_a_subprocess(tmp_path: Path) -> None:
    env = dict(os.environ, SANDBOX_CLIENT_SECRET="from-env-secret", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from qonic_proxy.sandbox.cli import main; "
         "sys.exit(main(sys.argv[1:]))",
         "--auto-consent", "--cert-dir", str(tmp_path / "certs"), "--token-style", "camel"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"sandbox ready: url=(https://127\.0\.0\.1:\d+) ca_file=(\S+)\n", line)
        assert m, line
        url, ca_file = m.groups()
        assert Path(ca_file) == tmp_path / "certs" / "ca.pem"
        session = requests.Session()
        session.trust_env = False
        session.verify = ca_file
        verifier = secrets.token_urlsafe(48)
        r = session.get(
            url + "/v1/auth/authorize",
            params={
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT,
                "response_type": "code",
                "scope": "projects:read",
                "code_challenge": s256(verifier),
                "code_challenge_method": "S256",
            },
            allow_redirects=False,
            timeout=10,
        )
        code = query_of(r.headers["Location"])["code"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        r = session.post(url + "/v1/auth/token", data=dict(form, client_secret=SECRET), timeout=10)
        assert r.status_code == 401  # the environment's secret wins over the default
        r = session.post(
            url + "/v1/auth/token", data=dict(form, client_secret="from-env-secret"), timeout=10
        )
        assert r.status_code == 200 and "accessToken" in r.json()
        session.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line
        assert "from-env-secret" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_main_refuses_a_public_host(capsys) -> None:
    assert main(["--host", "0.0.0.0"]) == 2  # noqa: S104
    assert "loopback" in capsys.readouterr().err
