"""The OAuth provider's rules as pure decisions on `Grants`: no socket, no HTTP, a fake clock."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from qonic_proxy.oauth.pkce import code_challenge_s256
from qonic_proxy.sandbox.grants import (
    CONSENT_LIFETIME,
    ConsentExpired,
    Grants,
    OAuthError,
    RedirectError,
    UntrustedRequest,
)
from qonic_proxy.sandbox.settings import SandboxSettings

REDIRECT = "http://localhost:8765/callback"
CLIENT = "sandbox-client"
SECRET = "sandbox-secret"
SCOPE = "projects:read models:read"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def grants(clock: Clock) -> Grants:
    return Grants(SandboxSettings(), clock=clock)


def authorize_params(verifier: str, **overrides: str | None) -> dict[str, list[str]]:
    params: dict[str, str | None] = {
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": SCOPE,
        "state": "st-1",
        "code_challenge": code_challenge_s256(verifier),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: [v] for k, v in params.items() if v is not None}


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def new_code(grants: Grants, verifier: str) -> str:
    location = grants.approve(grants.start_authorization(authorize_params(verifier)))
    assert location.startswith(REDIRECT + "?")
    q = query(location)
    assert q["state"] == "st-1"
    return q["code"]


def code_form(code: str, verifier: str, **overrides: str | None) -> dict[str, list[str]]:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    form.update(overrides)
    return {k: [v] for k, v in form.items() if v is not None}


def refresh_form(token: str, **overrides: str | None) -> dict[str, list[str]]:
    form: dict[str, str | None] = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": CLIENT,
        "client_secret": SECRET,
    }
    form.update(overrides)
    return {k: [v] for k, v in form.items() if v is not None}


def refused(grants: Grants, form: dict[str, list[str]], code: str) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        grants.token(form, header_auth=False)
    assert info.value.code == code, info.value.description
    return info.value


def login(grants: Grants) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    return grants.token(code_form(new_code(grants, verifier), verifier), header_auth=False)


# -- codes --------------------------------------------------------------------------------------


def test_a_code_is_single_use_and_its_replay_revokes_the_tokens(grants: Grants) -> None:
    verifier = secrets.token_urlsafe(48)
    code = new_code(grants, verifier)
    tokens = grants.token(code_form(code, verifier), header_auth=False)
    assert tokens["scope"] == SCOPE and tokens["expires_in"] == 3600
    assert grants.check_access(tokens["access_token"]) is not None
    err = refused(grants, code_form(code, verifier), "invalid_grant")
    assert "already used" in err.description
    assert grants.check_access(tokens["access_token"]) is None
    refused(grants, refresh_form(tokens["refresh_token"]), "invalid_grant")


def test_a_code_expires(grants: Grants, clock: Clock) -> None:
    verifier = secrets.token_urlsafe(48)
    code = new_code(grants, verifier)
    clock.now += grants.settings.code_lifetime + 0.1
    err = refused(grants, code_form(code, verifier), "invalid_grant")
    assert "expired" in err.description


def test_an_unknown_or_missing_code(grants: Grants) -> None:
    refused(grants, code_form("made-up", "v" * 43), "invalid_grant")
    refused(grants, code_form("", "v" * 43), "invalid_request")


def test_pkce_mismatch_and_missing_verifier_do_not_burn_the_code(grants: Grants) -> None:
    verifier = secrets.token_urlsafe(48)
    code = new_code(grants, verifier)
    refused(grants, code_form(code, secrets.token_urlsafe(48)), "invalid_grant")
    refused(grants, code_form(code, code_challenge_s256(verifier)), "invalid_grant")  # "plain"
    refused(grants, code_form(code, "short"), "invalid_grant")
    refused(grants, code_form(code, verifier, code_verifier=None), "invalid_request")
    assert grants.token(code_form(code, verifier), header_auth=False)["access_token"]
    assert grants.snapshot()["token"]["authorization_code"] == {"ok": 1, "error": 4}


def test_redirect_uri_must_match_at_the_token_step(clock: Clock) -> None:
    other = "http://localhost:9999/cb"
    grants = Grants(SandboxSettings(redirect_uris=(REDIRECT, other)), clock=clock)
    verifier = secrets.token_urlsafe(48)
    code = new_code(grants, verifier)
    for uri in (other, REDIRECT + "/", None):
        refused(grants, code_form(code, verifier, redirect_uri=uri), "invalid_grant")
    assert grants.token(code_form(code, verifier), header_auth=False)["access_token"]


# -- client authentication and the form ----------------------------------------------------------


def test_client_authentication(grants: Grants) -> None:
    verifier = secrets.token_urlsafe(48)
    code = new_code(grants, verifier)
    with pytest.raises(OAuthError) as info:
        grants.token(code_form(code, verifier), header_auth=True)
    assert info.value.code == "invalid_client" and info.value.status == 401
    for override in ({"client_secret": None}, {"client_secret": "wrong"}, {"client_id": "x"}):
        err = refused(grants, code_form(code, verifier, **override), "invalid_client")
        assert err.status == 401
    assert grants.token(code_form(code, verifier), header_auth=False)["access_token"]


def test_repeated_parameters_and_unknown_grant_types(grants: Grants) -> None:
    verifier = secrets.token_urlsafe(48)
    code = new_code(grants, verifier)
    form = code_form(code, verifier)
    refused(grants, dict(form, code=[code, code]), "invalid_request")
    refused(grants, dict(form, grant_type=["password"]), "unsupported_grant_type")
    # A repeated parameter in a request whose grant_type is unknown: refused, counted nowhere.
    refused(grants, dict(form, grant_type=["password"], code=[code, code]), "invalid_request")
    assert grants.snapshot()["token"]["authorization_code"] == {"ok": 0, "error": 1}


# -- refresh tokens -------------------------------------------------------------------------------


def test_refresh_rotates(grants: Grants) -> None:
    first = login(grants)
    second = grants.token(refresh_form(first["refresh_token"]), header_auth=False)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert grants.refresh[first["refresh_token"]].used
    assert grants.check_access(second["access_token"]) is not None
    assert grants.check_access(first["access_token"]) is not None  # still valid until it expires


def test_reusing_an_old_refresh_token_revokes_the_whole_grant(grants: Grants) -> None:
    first = login(grants)
    second = grants.token(refresh_form(first["refresh_token"]), header_auth=False)
    err = refused(grants, refresh_form(first["refresh_token"]), "invalid_grant")
    assert "grant is revoked" in err.description
    assert grants.check_access(first["access_token"]) is None
    assert grants.check_access(second["access_token"]) is None
    refused(grants, refresh_form(second["refresh_token"]), "invalid_grant")
    assert grants.snapshot()["token"]["refresh_token"] == {"ok": 1, "error": 2}


def test_another_login_is_not_touched_by_a_revoked_grant(grants: Grants) -> None:
    one, other = login(grants), login(grants)
    grants.token(refresh_form(one["refresh_token"]), header_auth=False)
    refused(grants, refresh_form(one["refresh_token"]), "invalid_grant")
    assert grants.check_access(other["access_token"]) is not None
    assert grants.token(refresh_form(other["refresh_token"]), header_auth=False)["access_token"]


def test_refresh_scope_can_narrow_but_not_widen(grants: Grants) -> None:
    tokens = login(grants)
    refused(grants, refresh_form(tokens["refresh_token"], scope="projects:write"), "invalid_scope")
    refused(grants, refresh_form(tokens["refresh_token"], scope=SCOPE + " models:write"),
            "invalid_scope")
    refused(grants, refresh_form(tokens["refresh_token"], scope=""), "invalid_scope")
    narrow = grants.token(refresh_form(tokens["refresh_token"], scope="projects:read"),
                          header_auth=False)
    assert narrow["scope"] == "projects:read"
    access = grants.check_access(narrow["access_token"])
    assert access is not None and access.scope == "projects:read"
    # The grant keeps its full scope: the next refresh without `scope` gets all of it back.
    again = grants.token(refresh_form(narrow["refresh_token"]), header_auth=False)
    assert again["scope"] == SCOPE


def test_refresh_belongs_to_its_client(grants: Grants) -> None:
    tokens = login(grants)
    refused(grants, refresh_form("not-a-token"), "invalid_grant")
    refused(grants, refresh_form(""), "invalid_request")
    assert grants.token(refresh_form(tokens["refresh_token"]), header_auth=False)


def test_without_rotation_and_without_refresh_tokens(clock: Clock) -> None:
    grants = Grants(SandboxSettings(rotate_refresh_tokens=False), clock=clock)
    tokens = login(grants)
    for _ in range(2):
        body = grants.token(refresh_form(tokens["refresh_token"]), header_auth=False)
        assert "refresh_token" not in body
    grants = Grants(SandboxSettings(issue_refresh_tokens=False), clock=clock)
    assert "refresh_token" not in login(grants)
    refused(grants, refresh_form("anything"), "unsupported_grant_type")


# -- access tokens and revocation ------------------------------------------------------------------


def test_access_tokens_expire(grants: Grants, clock: Clock) -> None:
    grants.set_access_token_lifetime(30)
    tokens = login(grants)
    assert tokens["expires_in"] == 30
    clock.now += 29
    assert grants.check_access(tokens["access_token"]) is not None
    clock.now += 1
    assert grants.check_access(tokens["access_token"]) is None
    with pytest.raises(ValueError):
        grants.set_access_token_lifetime(0)


def test_revoke_access_keeps_refresh_and_revoke_grants_kills_both(grants: Grants) -> None:
    tokens = login(grants)
    grants.revoke_access()
    assert grants.check_access(tokens["access_token"]) is None
    fresh = grants.token(refresh_form(tokens["refresh_token"]), header_auth=False)
    assert grants.check_access(fresh["access_token"]) is not None
    grants.revoke_grants()
    assert grants.check_access(fresh["access_token"]) is None
    refused(grants, refresh_form(fresh["refresh_token"]), "invalid_grant")


# -- authorize and consent ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"client_id": "someone-else"}, "client_id"),
        ({"client_id": None}, "client_id"),
        ({"redirect_uri": REDIRECT + "/"}, "redirect_uri"),
        ({"redirect_uri": None}, "redirect_uri"),
    ],
)
def test_untrusted_requests_are_never_redirected(grants: Grants, overrides, field) -> None:
    with pytest.raises(UntrustedRequest) as info:
        grants.start_authorization(authorize_params("v" * 43, **overrides))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "projects:read admin"}, "invalid_scope"),
        ({"scope": None}, "invalid_scope"),
    ],
)
def test_authorize_refusals_go_back_with_state(grants: Grants, overrides, error) -> None:
    with pytest.raises(RedirectError) as info:
        grants.start_authorization(authorize_params("v" * 43, **overrides))
    assert info.value.location.startswith(REDIRECT + "?")
    q = query(info.value.location)
    assert q["error"] == error and q["state"] == "st-1" and "code" not in q


def test_a_repeated_authorize_parameter_is_refused(grants: Grants) -> None:
    params = authorize_params("v" * 43)
    params["scope"] = ["projects:read", "models:read"]
    with pytest.raises(RedirectError) as info:
        grants.start_authorization(params)
    assert info.value.code == "invalid_request"


def test_consent_approval_gives_a_working_code(grants: Grants) -> None:
    verifier = secrets.token_urlsafe(48)
    consent_id = grants.new_consent(grants.start_authorization(authorize_params(verifier)))
    q = query(grants.answer_consent(consent_id, approve=True))
    assert q["state"] == "st-1"
    assert grants.token(code_form(q["code"], verifier), header_auth=False)["access_token"]
    with pytest.raises(ConsentExpired):
        grants.answer_consent(consent_id, approve=True)


def test_consent_denial_redirects_with_access_denied(grants: Grants) -> None:
    consent_id = grants.new_consent(grants.start_authorization(authorize_params("v" * 43)))
    with pytest.raises(RedirectError) as info:
        grants.answer_consent(consent_id, approve=False)
    q = query(info.value.location)
    assert q["error"] == "access_denied" and q["state"] == "st-1" and "code" not in q
    with pytest.raises(ConsentExpired):  # answered once: gone
        grants.answer_consent(consent_id, approve=True)
    assert not grants.codes


def test_consent_expires_and_unknown_ids_are_refused(grants: Grants, clock: Clock) -> None:
    consent_id = grants.new_consent(grants.start_authorization(authorize_params("v" * 43)))
    clock.now += CONSENT_LIFETIME + 1
    with pytest.raises(ConsentExpired):
        grants.answer_consent(consent_id, approve=True)
    for made_up in ("", "made-up"):
        with pytest.raises(ConsentExpired):
            grants.answer_consent(made_up, approve=True)


def test_old_consents_are_swept_when_new_ones_arrive(grants: Grants, clock: Clock) -> None:
    grants.new_consent(grants.start_authorization(authorize_params("v" * 43)))
    clock.now += CONSENT_LIFETIME + 1
    grants.new_consent(grants.start_authorization(authorize_params("v" * 43)))
    assert len(grants.pending) == 1


def test_no_secret_in_a_refusal(grants: Grants) -> None:
    tokens = login(grants)
    grants.token(refresh_form(tokens["refresh_token"]), header_auth=False)
    err = refused(grants, refresh_form(tokens["refresh_token"]), "invalid_grant")
    for value in (tokens["refresh_token"], tokens["access_token"], SECRET):
        assert value not in str(err) and value not in repr(err)


def test_refresh_token_reuse_is_counted(grants: Grants) -> None:
    tokens = login(grants)
    assert grants.snapshot()["refresh_token_reused"] == 0
    grants.token(refresh_form(tokens["refresh_token"]), header_auth=False)
    refused(grants, refresh_form(tokens["refresh_token"]), "invalid_grant")
    assert grants.snapshot()["refresh_token_reused"] == 1
