"""exchange_code / refresh_tokens against a real token endpoint on 127.0.0.1 (HTTP and HTTPS)."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from qonic_proxy.errors import ConfigError, TokenEndpointError
from qonic_proxy.oauth import client as oauth
from qonic_proxy.oauth import pkce
from qonic_proxy.trust import ssl_context, trust_roots
from tests.oauth.support import (
    ACCESS,
    CODE,
    REFRESH,
    SECRET,
    FakeEndpoint,
    LocalTls,
    Recorded,
    Reply,
    fake_endpoint,
    json_body,
    make_cfg,
    token_reply,
)


def test_exchange_code_sends_the_form(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply(refresh_token=REFRESH))
    cfg = make_cfg(token_url=endpoint.url, redirect_uri="http://127.0.0.1:8765/cb?x=1&y=%20")
    before = time.time()
    tokens = oauth.exchange_code(cfg, code=CODE, code_verifier="v" * 50, timeout=5)
    assert tokens.access_token == ACCESS and tokens.refresh_token == REFRESH
    assert before <= tokens.obtained_at <= time.time()
    assert tokens.expires_at == pytest.approx(tokens.obtained_at + 3600)
    [request] = endpoint.requests
    assert request.method == "POST" and request.path == "/v1/auth/token"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Accept"] == "application/json"
    assert request.form == {
        "client_id": ["my-client"],
        "client_secret": [SECRET],
        "code": [CODE],
        "redirect_uri": ["http://127.0.0.1:8765/cb?x=1&y=%20"],
        "code_verifier": ["v" * 50],
        "grant_type": ["authorization_code"],
    }


def test_exchange_code_public_client_sends_no_secret(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    cfg = make_cfg(token_url=endpoint.url, secret=None)
    oauth.exchange_code(cfg, code=CODE, code_verifier="v" * 43, timeout=5)
    assert "client_secret" not in endpoint.requests[0].form


def test_refresh_keeps_old_refresh_token(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    cfg = make_cfg(token_url=endpoint.url)
    tokens = oauth.refresh_tokens(cfg, REFRESH, timeout=5)
    assert tokens.refresh_token == REFRESH
    assert endpoint.requests[0].form == {
        "client_id": ["my-client"],
        "client_secret": [SECRET],
        "grant_type": ["refresh_token"],
        "refresh_token": [REFRESH],
    }


def test_refresh_takes_a_rotated_refresh_token(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply(refreshToken="rotated-refresh-token"))
    tokens = oauth.refresh_tokens(make_cfg(token_url=endpoint.url), REFRESH, timeout=5)
    assert tokens.refresh_token == "rotated-refresh-token"


def test_refresh_invalid_grant_says_log_in_again(
    endpoint: FakeEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint.set_json(
        400, {"error": "invalid_grant", "error_description": f"refresh token {REFRESH} revoked"}
    )
    with pytest.raises(TokenEndpointError) as info:
        oauth.refresh_tokens(make_cfg(token_url=endpoint.url), REFRESH, timeout=5)
    assert info.value.error_code == "invalid_grant" and info.value.status == 400
    assert "qonic-proxy login" in str(info.value)
    for secret in (REFRESH, SECRET):
        assert secret not in str(info.value) and secret not in caplog.text


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_exchange_redirect_is_an_error_and_not_followed(
    endpoint: FakeEndpoint, status: int
) -> None:
    def reply(request: Recorded) -> Reply:
        if request.path == "/v1/auth/token":
            return status, {"Location": "/elsewhere"}, b""
        return 200, {"Content-Type": "application/json"}, json_body(token_reply())

    endpoint.reply = reply
    with pytest.raises(TokenEndpointError) as info:
        oauth.exchange_code(make_cfg(token_url=endpoint.url), code=CODE, code_verifier="v" * 43)
    assert info.value.error_code == "redirect" and info.value.status == status
    assert [r.path for r in endpoint.requests] == ["/v1/auth/token"]


def test_exchange_error_status_from_server(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(401, {"error": "invalid_client", "error_description": "unknown client"})
    with pytest.raises(TokenEndpointError) as info:
        oauth.exchange_code(make_cfg(token_url=endpoint.url), code=CODE, code_verifier="v" * 43)
    assert info.value.status == 401 and "invalid_client: unknown client" in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_exchange_huge_response_is_refused(endpoint: FakeEndpoint) -> None:
    endpoint.reply = (200, {"Content-Type": "application/json"}, b" " * (3 * 1024 * 1024))
    with pytest.raises(TokenEndpointError) as info:
        oauth.exchange_code(make_cfg(token_url=endpoint.url), code=CODE, code_verifier="v" * 43)
    assert info.value.error_code == "too_large"


def test_exchange_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/auth/token"
        started = time.monotonic()
        with pytest.raises(TokenEndpointError) as info:
            oauth.exchange_code(
                make_cfg(token_url=url), code=CODE, code_verifier="v" * 43, timeout=0.3
            )
        assert time.monotonic() - started < 5
    assert str(info.value) == (
        f"the token endpoint at {url} did not answer within 0.3 s; check [qonic] token_url "
        "and your network"
    )
    assert info.value.error_code == "timeout"


def test_exchange_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TokenEndpointError) as info:
        oauth.exchange_code(
            make_cfg(token_url=f"http://127.0.0.1:{port}/t"), code=CODE, code_verifier="v" * 43
        )
    assert info.value.error_code == "connection_refused"
    assert "refused the connection" in str(info.value) and "[qonic] token_url" in str(info.value)


def test_exchange_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(TokenEndpointError) as info:
        oauth.exchange_code(
            make_cfg(token_url="https://auth.qonic.invalid/t"), code=CODE, code_verifier="v" * 43
        )
    assert info.value.error_code == "dns"
    assert "auth.qonic.invalid" in str(info.value) and "could not be resolved" in str(info.value)


def test_exchange_tls_untrusted_then_trusted_with_ca_file(test_tls: LocalTls) -> None:
    with fake_endpoint(tls=test_tls.server_context) as endpoint:
        endpoint.set_json(200, token_reply())
        with pytest.raises(TokenEndpointError) as info:
            oauth.exchange_code(
                make_cfg(token_url=endpoint.url), code=CODE, code_verifier="v" * 43, timeout=5
            )
        assert info.value.error_code == "tls_verify"
        assert "[qonic] ca_file" in str(info.value) and "could not be verified" in str(info.value)
        assert endpoint.requests == []  # nothing was sent over the unverified connection

        cfg = make_cfg(token_url=endpoint.url, ca_file=test_tls.ca_file)
        tokens = oauth.exchange_code(cfg, code=CODE, code_verifier="v" * 43, timeout=5)
        assert tokens.access_token == ACCESS
        assert endpoint.requests[0].form["code"] == [CODE]


def test_exchange_plain_http_to_a_tls_port_is_a_clear_error(test_tls: LocalTls) -> None:
    with fake_endpoint(tls=test_tls.server_context) as endpoint:
        url = endpoint.url.replace("https://", "http://")
        with pytest.raises(TokenEndpointError) as info:
            oauth.exchange_code(
                make_cfg(token_url=url), code=CODE, code_verifier="v" * 43, timeout=5
            )
        assert info.value.error_code in ("network", "http_error", "invalid_response")


def test_bad_ca_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    for ca_file in (bad, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError) as info:
            ssl_context(trust_roots(make_cfg(ca_file=ca_file).qonic.ca_file))
        assert "[qonic] ca_file" in str(info.value)
        with pytest.raises(ConfigError) as info:  # the token client uses that same decision
            oauth.exchange_code(make_cfg(ca_file=ca_file), code=CODE, code_verifier="v" * 43)
        assert "[qonic] ca_file" in str(info.value)


def test_non_http_token_url_is_refused() -> None:
    with pytest.raises(TokenEndpointError):
        oauth.exchange_code(
            make_cfg(token_url="file:///etc/passwd"), code=CODE, code_verifier="v" * 43
        )


def test_no_secret_in_exceptions_or_logs(
    endpoint: FakeEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    verifier = pkce.new_code_verifier()
    cfg = make_cfg(token_url=endpoint.url)
    endpoint.set_json(200, token_reply(refresh_token=REFRESH))
    tokens = oauth.exchange_code(cfg, code=CODE, code_verifier=verifier, timeout=5)
    texts = [repr(tokens), caplog.text]
    endpoint.set_json(
        400,
        {"error": "invalid_grant", "error_description": f"{CODE} {verifier} {SECRET} mismatch"},
    )
    with pytest.raises(TokenEndpointError) as info:
        oauth.exchange_code(cfg, code=CODE, code_verifier=verifier, timeout=5)
    texts += [str(info.value), repr(info.value), caplog.text]
    endpoint.set_json(
        200, {"access_token": ACCESS, "token_type": "weird", "refresh_token": REFRESH}
    )
    with pytest.raises(TokenEndpointError) as info:
        oauth.exchange_code(cfg, code=CODE, code_verifier=verifier, timeout=5)
    texts += [str(info.value), caplog.text, repr(cfg)]
    assert "token request" in caplog.text  # the debug log did run
    for text in texts:
        for secret in (CODE, verifier, SECRET, ACCESS, REFRESH):
            assert secret not in text


@pytest.mark.parametrize(("status", "headers", "transient", "retry_after"), [
    (503, {"Retry-After": "12"}, True, 12.0),
    (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, True, 0.0),  # a date in the past
    (502, {}, True, None),
    (500, {"Retry-After": "soon"}, True, None),
    (400, {}, False, None),
])
def test_refresh_failures_carry_transience_and_retry_after(
    endpoint: FakeEndpoint, status: int, headers: dict[str, str], transient: bool,
    retry_after: float | None,
) -> None:
    endpoint.reply = (status, {"Content-Type": "text/html", **headers}, b"<h1>oops</h1>")
    with pytest.raises(TokenEndpointError) as info:
        oauth.refresh_tokens(make_cfg(token_url=endpoint.url), REFRESH, timeout=5)
    assert info.value.transient is transient and info.value.retry_after == retry_after
    assert info.value.reason == f"http_{status}"


def test_an_oauth_temporarily_unavailable_is_transient(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(400, {"error": "temporarily_unavailable"})
    with pytest.raises(TokenEndpointError) as info:
        oauth.refresh_tokens(make_cfg(token_url=endpoint.url), REFRESH, timeout=5)
    assert info.value.transient and info.value.reason == "http_400"


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TokenEndpointError) as info:
        oauth.refresh_tokens(make_cfg(token_url=f"http://127.0.0.1:{port}/t"), REFRESH, timeout=5)
    assert info.value.transient and info.value.reason == "connection_refused"
