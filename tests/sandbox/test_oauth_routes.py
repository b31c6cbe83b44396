"""The OAuth endpoints over real TLS: as strict as a real authorization server.

Every rule is checked from the outside (HTTP over TLS on 127.0.0.1, verified against the
sandbox's throwaway CA), so a lenient sandbox cannot hide a lenient proxy."""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlencode

import pytest

from tests.sandbox.helpers import (
    ALL_SCOPES,
    CLIENT_ID,
    REDIRECT,
    SECRET,
    Client,
    assert_error,
    consent_id,
    query_of,
    s256,
)


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
