"""parse_token_response (and the builders): what a token endpoint answer turns into."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.oauth import token_request as oauth
from qonic_proxy.oauth.token_request import MAX_TOKEN_RESPONSE, parse_token_response
from qonic_proxy.oauth.tokenset import TokenSet
from tests.oauth.support import ACCESS, CODE, REFRESH, SECRET, json_body, make_cfg, make_jwt


def parse(status: int, body: bytes, ctype: str | None = "application/json", **kw: Any) -> TokenSet:
    return oauth.parse_token_response(
        status, ctype, body, requested_scopes=("projects:read",), now=1000.0, **kw
    )


def parse_error(status: int, body: bytes, ctype: str | None = "application/json", **kw: Any):
    with pytest.raises(TokenEndpointError) as info:
        parse(status, body, ctype, **kw)
    return info.value


def test_parse_snake_case() -> None:
    tokens = parse(
        200,
        json_body(
            {
                "access_token": ACCESS,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": REFRESH,
                "scope": "projects:read models:write",
            }
        ),
    )
    assert tokens == TokenSet(
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=4600.0,
        scopes=("projects:read", "models:write"),
        token_type="Bearer",
        obtained_at=1000.0,
    )


def test_parse_camel_case_and_string_expiry() -> None:
    tokens = parse(
        200,
        json_body(
            {
                "accessToken": ACCESS,
                "tokenType": "bearer",
                "expiresIn": "120",
                "refreshToken": REFRESH,
            }
        ),
        ctype=None,
    )
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == REFRESH
    assert tokens.expires_at == 1120.0
    assert tokens.token_type == "Bearer"
    assert tokens.scopes == ("projects:read",)  # requested scopes when the server names none


def test_parse_jwt_exp_when_no_expires_in() -> None:
    token = make_jwt({"sub": "u", "exp": 1_900_000_000})
    tokens = parse(200, json_body({"access_token": token, "token_type": "Bearer"}))
    assert tokens.expires_at == 1_900_000_000.0
    # expires_in wins over the JWT hint
    tokens = parse(200, json_body({"access_token": token, "expires_in": 60}))
    assert tokens.expires_at == 1060.0


def test_parse_opaque_token_without_expiry_and_missing_type() -> None:
    tokens = parse(200, json_body({"access_token": "opaque.not-json.x"}))
    assert tokens.expires_at is None
    assert tokens.token_type == "Bearer"
    assert tokens.refresh_token is None


def test_parse_rfc6749_invalid_grant() -> None:
    err = parse_error(
        400, json_body({"error": "invalid_grant", "error_description": "The code has expired."})
    )
    assert err.error_code == "invalid_grant" and err.status == 400
    assert "invalid_grant: The code has expired." in str(err)
    assert "qonic-proxy login" in str(err)
    assert "\n" not in str(err)


def test_parse_invalid_client_says_check_credentials() -> None:
    err = parse_error(401, json_body({"error": "invalid_client"}))
    assert err.error_code == "invalid_client" and err.status == 401
    assert "client_id" in str(err) and "secret" in str(err)


def test_parse_qonic_error_details() -> None:
    err = parse_error(400, json_body({"errorDetails": "Authorization code not found"}))
    assert "Authorization code not found" in str(err)
    assert err.status == 400 and err.error_code == "http_error"
    err = parse_error(
        403, json_body({"errorDetails": [{"message": "client disabled"}, {"message": "ask admin"}]})
    )
    assert "client disabled; ask admin" in str(err)


def test_parse_error_in_a_200_body() -> None:
    err = parse_error(200, json_body({"error": "invalid_scope", "error_description": "nope"}))
    assert err.error_code == "invalid_scope" and "[oauth] scopes" in str(err)


def test_parse_non_json_error_and_success() -> None:
    page = b"<html><body>Bad gateway: internal-host-42</body></html>"
    err = parse_error(502, page, ctype="text/html")
    assert err.status == 502 and "not JSON" in str(err) and "text/html" in str(err)
    assert "internal-host-42" not in str(err)  # an HTML page is not echoed
    err = parse_error(200, page, ctype="text/html")
    assert err.error_code == "invalid_response"


def test_parse_5xx_json_without_error_says_try_later() -> None:
    err = parse_error(503, json_body({"status": "down"}))
    assert err.status == 503 and "try again later" in str(err)


def test_parse_huge_body() -> None:
    body = json_body({"access_token": ACCESS, "pad": "x" * (oauth.MAX_TOKEN_RESPONSE + 10)})
    err = parse_error(200, body)
    assert err.error_code == "too_large" and ACCESS not in str(err)


@pytest.mark.parametrize(
    "data",
    [
        {"access_token": 12345},
        {"access_token": ""},
        {"token_type": "Bearer"},
        {"access_token": ACCESS, "expires_in": "soon"},
        {"access_token": ACCESS, "expires_in": True},
        {"access_token": ACCESS, "expires_in": -5},
        {"access_token": ACCESS, "expires_in": [3600]},
        {"access_token": ACCESS, "refresh_token": 42},
        {"access_token": ACCESS, "token_type": 1},
        [ACCESS],
        ACCESS,
    ],
)
def test_parse_wrong_types(data: object) -> None:
    err = parse_error(200, json_body(data))
    assert err.error_code in ("invalid_response", "missing_access_token", "unsupported_token_type")
    assert ACCESS not in str(err)


def test_parse_nan_expiry_is_refused() -> None:
    err = parse_error(200, b'{"access_token": "abc", "expires_in": NaN}')
    assert err.error_code == "invalid_response"


def test_parse_rejects_other_token_types() -> None:
    err = parse_error(200, json_body({"access_token": ACCESS, "token_type": "MAC"}))
    assert err.error_code == "unsupported_token_type" and "'MAC'" in str(err)


def test_parse_cleans_and_truncates_server_text() -> None:
    description = "bad\x1b[31m thing\r\nhappened\u202e " + "x" * 1000
    err = parse_error(
        400, json_body({"error": "invalid_request", "error_description": description})
    )
    text = str(err)
    assert "\x1b" not in text and "\n" not in text and "\r" not in text and "\u202e" not in text
    assert "bad [31m thing happened" in text
    assert len(text) < 500


def test_parse_redacts_echoed_secrets() -> None:
    body = json_body({"error": "invalid_grant", "error_description": f"code {CODE} is unknown"})
    err = parse_error(400, body, redact=(CODE, None))
    assert CODE not in str(err) and "[redacted]" in str(err)


# --------------------------------------------------------------------------------------------
# Property tests (hypothesis): malformed token endpoint answers end in one clean error

FAST = settings(max_examples=40, deadline=3000,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)
_FIELDS = ["access_token", "accessToken", "token_type", "tokenType", "expires_in", "expiresIn",
           "refresh_token", "refreshToken", "scope", "error", "error_description", "errorDetails"]
_SECRET = "the-code-we-sent-0123456789"


@st.composite
def _token_body(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["object", "any-json", "bytes", "echo"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "any-json":
        return json.dumps(draw(_JSON)).encode()
    body = draw(st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=6))
    if kind == "echo":  # a server that echoes what we sent into its error text
        body["error_description"] = f"bad code {_SECRET}"
        body.setdefault("error", "invalid_grant")
    return json.dumps(body, allow_nan=True).encode()


@FAST
@given(status=st.sampled_from([200, 201, 204, 302, 400, 401, 403, 500, 503]),
       content_type=st.sampled_from([None, "application/json", "text/html", "text/plain; x=\x00"]),
       body=_token_body())
def test_malformed_token_responses_are_a_clean_error(status, content_type, body):
    try:
        tokens = parse_token_response(status, content_type, body, requested_scopes=("a",),
                                      now=1000.0, endpoint="https://x/token", redact=[_SECRET])
    except TokenEndpointError as err:
        message = str(err)
        assert message and _SECRET not in message and "\n" not in message
        return
    assert isinstance(tokens, TokenSet) and status < 300
    assert isinstance(tokens.access_token, str) and tokens.access_token
    assert tokens.expires_at is None or tokens.expires_at == tokens.expires_at  # not NaN
    assert tokens.access_token not in repr(tokens)


def test_huge_token_response_is_refused():
    body = json.dumps({"access_token": "a" * (MAX_TOKEN_RESPONSE + 10)}).encode()
    with pytest.raises(TokenEndpointError) as err:
        parse_token_response(200, "application/json", body, requested_scopes=(), now=0)
    assert err.value.error_code == "too_large"


# --------------------------------------------------------------------------------------------
# The builders: what is sent, as (url, headers, body)


def form_of(body: bytes) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)


def test_prepare_code_exchange() -> None:
    cfg = make_cfg(redirect_uri="http://127.0.0.1:8765/cb")
    url, headers, body = oauth.prepare_code_exchange(cfg, code=CODE, code_verifier="v" * 43)
    assert url == cfg.qonic.token_url
    assert headers == {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "User-Agent": "qonic-proxy",
    }
    assert form_of(body) == {
        "client_id": ["my-client"],
        "client_secret": [SECRET],
        "code": [CODE],
        "redirect_uri": ["http://127.0.0.1:8765/cb"],
        "code_verifier": ["v" * 43],
        "grant_type": ["authorization_code"],
    }


def test_prepare_refresh_for_a_public_client() -> None:
    request = oauth.prepare_refresh(make_cfg(secret=None), REFRESH)
    assert form_of(request.body) == {
        "client_id": ["my-client"],
        "grant_type": ["refresh_token"],
        "refresh_token": [REFRESH],
    }


def test_a_prepared_request_hides_its_body_in_repr() -> None:
    request = oauth.prepare_code_exchange(make_cfg(), code=CODE, code_verifier="v" * 43)
    text = repr(request)
    assert CODE not in text and SECRET not in text and "v" * 43 not in text
    assert request.url in text


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("Thu, 01 Jan 1970 00:17:10 GMT", 30.0),  # 1030 - now (1000)
    ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),  # in the past: now
    ("-5", None),
    ("1.5", None),
    ("soon", None),
    ("", None),
    (None, None),
])
def test_retry_after_is_delta_seconds_or_an_http_date(header: str | None,
                                                     seconds: float | None) -> None:
    assert oauth.parse_retry_after(header, 1000.0) == seconds


def test_an_error_answer_carries_its_retry_after() -> None:
    error = parse_error(503, b"{}", retry_after="42")
    assert error.retry_after == 42.0 and error.transient and error.reason == "http_503"
    assert parse_error(400, json_body({"error": "invalid_grant"})).transient is False
