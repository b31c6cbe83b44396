"""The OAuth client: authorize URL, token responses, token requests and the loopback callback.

Everything talks to servers started here on 127.0.0.1 / ::1; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import http.server
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qonic_proxy.config.model import (
    Config,
    OAuthSettings,
    ProxySettings,
    QonicSettings,
    TokenSettings,
)
from qonic_proxy.errors import ConfigError, LoginError, QonicProxyError, TokenEndpointError
from qonic_proxy.oauth import client as oauth
from qonic_proxy.oauth import pkce
from qonic_proxy.oauth.client import LoginAttempt, TokenSet
from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context

SECRET = "s3cr3t-client-secret-value"
CODE = "authcode-0123456789-abcdef"
ACCESS = "access-token-ZYXWVUTSRQ-0987654321"
REFRESH = "refresh-token-QWERTYUIOP-1234567890"


def make_cfg(
    *,
    token_url: str = "https://api.qonic.com/v1/auth/token",  # noqa: S107 - a URL
    authorize_url: str = "https://api.qonic.com/v1/auth/authorize",
    redirect_uri: str = "http://localhost:8765/callback",
    secret: str | None = SECRET,
    scopes: tuple[str, ...] = ("projects:read", "models:read"),
    ca_file: Path | None = None,
    login_timeout: float = 10,
) -> Config:
    return Config(
        path=None,
        qonic=QonicSettings(
            api_url="https://api.qonic.com",
            authorize_url=authorize_url,
            token_url=token_url,
            ca_file=ca_file,
        ),
        oauth=OAuthSettings(
            client_id="my-client",
            client_secret=secret,
            secret_source="env" if secret else "none",
            scopes=scopes,
            redirect_uri=redirect_uri,
            open_browser=False,
            login_timeout=login_timeout,
        ),
        proxy=ProxySettings(
            listen_host="127.0.0.1",
            port=8080,
            forward_port=0,
            allowed_hosts=("127.0.0.1", "localhost"),
            client_key_file=None,
            ca_dir=Path("/nonexistent"),
        ),
        token=TokenSettings(cache_file=Path("/nonexistent/tokens.json"), refresh_margin=60),
    )


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; these tests must reach 127.0.0.1 directly."""
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)


def json_body(data: object) -> bytes:
    return json.dumps(data).encode()


def make_jwt(claims: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.{b64(b'not-a-real-signature')}"


def parse(status: int, body: bytes, ctype: str | None = "application/json", **kw: Any) -> TokenSet:
    return oauth.parse_token_response(
        status, ctype, body, requested_scopes=("projects:read",), now=1000.0, **kw
    )


def parse_error(status: int, body: bytes, ctype: str | None = "application/json", **kw: Any):
    with pytest.raises(TokenEndpointError) as info:
        parse(status, body, ctype, **kw)
    return info.value


# --------------------------------------------------------------------------------------------
# TokenSet


def sample_tokens(**changes: Any) -> TokenSet:
    values: dict[str, Any] = dict(
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=4600.0,
        scopes=("projects:read",),
        token_type="Bearer",
        obtained_at=1000.0,
    )
    values.update(changes)
    return TokenSet(**values)


def test_tokenset_json_round_trip() -> None:
    for tokens in (sample_tokens(), sample_tokens(refresh_token=None, expires_at=None)):
        data = json.loads(json.dumps(tokens.to_json()))
        assert TokenSet.from_json(data) == tokens


def test_tokenset_repr_hides_tokens() -> None:
    text = repr(sample_tokens())
    assert ACCESS not in text and REFRESH not in text
    assert "expires_at=4600.0" in text


@pytest.mark.parametrize(
    "change",
    [
        {"access_token": ""},
        {"access_token": 5},
        {"refresh_token": 7},
        {"expires_at": "soon"},
        {"expires_at": True},
        {"scopes": "projects:read"},
        {"scopes": [1]},
        {"token_type": "MAC"},
        {"obtained_at": None},
    ],
)
def test_tokenset_from_json_rejects_bad_shapes(change: dict[str, Any]) -> None:
    data = sample_tokens().to_json()
    data.update(change)
    with pytest.raises(ValueError) as info:
        TokenSet.from_json(data)
    assert ACCESS not in str(info.value) and REFRESH not in str(info.value)


def test_tokenset_from_json_rejects_non_dict_and_missing_field() -> None:
    with pytest.raises(ValueError):
        TokenSet.from_json([])  # type: ignore[arg-type]
    data = sample_tokens().to_json()
    del data["obtained_at"]
    with pytest.raises(ValueError):
        TokenSet.from_json(data)


# --------------------------------------------------------------------------------------------
# Authorize URL


def test_authorize_url_fields() -> None:
    cfg = make_cfg()
    url = oauth.build_authorize_url(cfg, code_challenge="CHALLENGE", state="STATE")
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "api.qonic.com",
        "/v1/auth/authorize",
    )
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    assert query == {
        "client_id": ["my-client"],
        "redirect_uri": ["http://localhost:8765/callback"],
        "response_type": ["code"],
        "scope": ["projects:read models:read"],
        "state": ["STATE"],
        "code_challenge": ["CHALLENGE"],
        "code_challenge_method": ["S256"],
    }
    assert SECRET not in url and "secret" not in url


def test_authorize_url_keeps_an_existing_query() -> None:
    cfg = make_cfg(authorize_url="https://auth.example/authorize?tenant=a")
    url = oauth.build_authorize_url(cfg, code_challenge="C", state="S")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["tenant"] == ["a"] and query["state"] == ["S"]


# --------------------------------------------------------------------------------------------
# parse_token_response


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
# A tiny token endpoint (HTTP or HTTPS) in a thread


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.body.decode(), keep_blank_values=True)


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class FakeEndpoint:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    reply: Reply | Callable[[Recorded], Reply] = (200, {}, b"")

    def set_json(self, status: int, data: object) -> None:
        self.reply = (status, {"Content-Type": "application/json"}, json_body(data))


def token_reply(**extra: Any) -> dict[str, Any]:
    data = {"access_token": ACCESS, "token_type": "Bearer", "expires_in": 3600}
    data.update(extra)
    return data


@contextlib.contextmanager
def fake_endpoint(tls: ssl.SSLContext | None = None) -> Iterator[FakeEndpoint]:
    endpoint = FakeEndpoint(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            record = Recorded(
                self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
            )
            endpoint.requests.append(record)
            reply = endpoint.reply(record) if callable(endpoint.reply) else endpoint.reply
            status, headers, body = reply
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)
            self.close_connection = True

        do_POST = _serve
        do_GET = _serve

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # refused handshakes and clients that hang up are part of the tests

    server = Server(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    endpoint.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/v1/auth/token"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    with fake_endpoint() as ep:
        yield ep


@dataclass(frozen=True)
class LocalTls:
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def test_tls(tmp_path_factory: pytest.TempPathFactory) -> LocalTls:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    tls = make_server_tls(tmp_path_factory.mktemp("tls"))
    return LocalTls(ca_file=tls.ca_file, server_context=server_ssl_context(tls))


# --------------------------------------------------------------------------------------------
# exchange_code / refresh_tokens


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
            oauth.make_ssl_context(make_cfg(ca_file=ca_file))
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


# --------------------------------------------------------------------------------------------
# The loopback callback server


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str


def browse(port: int, target: str, method: str = "GET", host: str = "127.0.0.1") -> Page:
    """A blocking 'browser' request, bounded in time."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        return Page(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read().decode(),
        )
    finally:
        conn.close()


async def abrowse(port: int, target: str, method: str = "GET", host: str = "127.0.0.1") -> Page:
    return await asyncio.to_thread(browse, port, target, method, host)


def refused(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except (ConnectionRefusedError, ConnectionResetError):  # reset: a connect racing the close
        return True


def state_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["state"][0]


def run(coro: Any, timeout: float = 30) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def callback_cfg(endpoint: FakeEndpoint, port: int, host: str = "127.0.0.1", **kw: Any) -> Config:
    return make_cfg(token_url=endpoint.url, redirect_uri=f"http://{host}:{port}/callback", **kw)


SAFE_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'",
    "referrer-policy": "no-referrer",
    "connection": "close",
}


def assert_safe_page(page: Page) -> None:
    for name, value in SAFE_HEADERS.items():
        assert page.headers.get(name) == value, name
    assert "http" not in page.body.lower().replace("http-equiv", "")  # no external resources
    assert "<script" not in page.body.lower()


def test_login_attempt_full_flow(endpoint: FakeEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint.set_json(200, token_reply(refresh_token=REFRESH))
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[TokenSet, Page, str]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        query = urllib.parse.urlencode({"code": CODE, "state": state_of(attempt.authorize_url)})
        page = await abrowse(port, f"/callback?{query}")
        return await waiter, page, attempt.authorize_url

    tokens, page, url = run(scenario())
    assert tokens.access_token == ACCESS and tokens.refresh_token == REFRESH
    assert page.status == 200 and "Logged in to Qonic. You can close this tab." in page.body
    assert CODE not in page.body
    assert_safe_page(page)
    [request] = endpoint.requests
    form = request.form
    assert form["code"] == [CODE]
    assert form["redirect_uri"] == [f"http://127.0.0.1:{port}/callback"]
    challenge = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["code_challenge"][0]
    assert pkce.code_challenge_s256(form["code_verifier"][0]) == challenge
    assert refused(port)  # the listener is gone
    for secret in (CODE, form["code_verifier"][0], ACCESS, REFRESH, SECRET):
        assert secret not in caplog.text


def test_wrong_state_and_malformed_requests_keep_waiting(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[list[Page], Page, TokenSet]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        state = state_of(attempt.authorize_url)
        bad = [
            await abrowse(port, "/callback?code=x&state=wrong"),
            await abrowse(port, f"/callback?code=x&state={state[:-1]}"),
            await abrowse(port, f"/callback?code=x&state={state}&state={state}"),
            await abrowse(port, f"/callback?code=x&code=y&state={state}"),
            await abrowse(port, f"/callback?code=x&error=e&state={state}"),
            await abrowse(port, f"/callback?state={state}"),
            await abrowse(port, f"/callback?code=&state={state}"),
            await abrowse(port, "/callback?code=x"),
            await abrowse(port, "/callback"),
            await abrowse(port, f"/callback?code=x&state={state}&junk"),
            await abrowse(port, f"/callback?code=%ff&state={state}"),
            await abrowse(
                port, f"/callback?state={state}&error=a&error_description=1&error_description=2"
            ),
        ]
        assert not waiter.done()
        good = await abrowse(port, f"/callback?code={CODE}&state={state}&scope=projects%3Aread")
        return bad, good, await waiter

    bad, good, tokens = run(scenario())
    assert [page.status for page in bad] == [400] * len(bad)
    for page in bad:
        assert_safe_page(page)
        assert "still waiting" in page.body
    assert good.status == 200 and tokens.access_token == ACCESS
    assert len(endpoint.requests) == 1


def test_wrong_path_and_method_keep_waiting(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[Page, Page, Page, Page, TokenSet]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        state = state_of(attempt.authorize_url)
        wrong_path = await abrowse(port, f"/callbackX?code=x&state={state}")
        root = await abrowse(port, "/")
        post = await abrowse(port, f"/callback?code=x&state={state}", method="POST")
        head = await abrowse(port, f"/callback?code=x&state={state}", method="HEAD")
        assert not waiter.done()
        await abrowse(port, f"/callback?code={CODE}&state={state}")
        return wrong_path, root, post, head, await waiter

    wrong_path, root, post, head, tokens = run(scenario())
    assert wrong_path.status == 404 and root.status == 404
    assert post.status == 405 and post.headers["allow"] == "GET"
    assert head.status == 405
    assert_safe_page(wrong_path)
    assert tokens.access_token == ACCESS


def test_error_callback_is_escaped_and_ends_the_login(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port)
    evil = "<script>alert('x')</script> & more"

    async def scenario() -> tuple[Page, LoginError]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        query = urllib.parse.urlencode(
            {
                "error": "access_denied",
                "error_description": evil,
                "state": state_of(attempt.authorize_url),
            }
        )
        page = await abrowse(port, f"/callback?{query}")
        with pytest.raises(LoginError) as info:
            await waiter
        return page, info.value

    page, error = run(scenario())
    assert "<script>" not in page.body
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page.body
    assert "access_denied" in page.body
    assert_safe_page(page)
    assert str(error).startswith("Qonic refused the login: access_denied: <script>")
    assert "qonic-proxy login" in str(error)
    assert endpoint.requests == []
    assert refused(port)


def test_wait_times_out_and_closes(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> LoginError:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        assert not refused(port)
        with pytest.raises(LoginError) as info:
            await attempt.wait(0.2)
        return info.value

    error = run(scenario())
    assert str(error) == "no login completed within 0.2 s; run `qonic-proxy login` to try again"
    assert refused(port)


def test_default_timeout_comes_from_config(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port, login_timeout=0.25)

    async def scenario() -> LoginError:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        with pytest.raises(LoginError) as info:
            await attempt.wait()
        return info.value

    assert "within 0.25 s" in str(run(scenario()))


def test_port_busy(endpoint: FakeEndpoint) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        cfg = callback_cfg(endpoint, port)

        async def scenario() -> LoginError:
            attempt = LoginAttempt(cfg)
            with pytest.raises(LoginError) as info:
                await attempt.start()
            return info.value

        error = run(scenario())
    assert str(error) == (
        f"port {port} for the login callback (redirect_uri http://127.0.0.1:{port}/callback) is "
        "in use; stop the program using it or change [oauth] redirect_uri (it must match the one "
        "registered with Qonic)"
    )


@pytest.mark.parametrize(
    "uri",
    ["https://localhost:8765/cb", "http://example.com:8765/cb", "http://localhost/cb"],
)
def test_unusable_redirect_uri(uri: str) -> None:
    with pytest.raises(LoginError) as info:
        LoginAttempt(make_cfg(redirect_uri=uri))
    assert "[oauth] redirect_uri" in str(info.value)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_localhost_listens_on_both_loopbacks(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    while True:  # the same port must be free on ::1 too
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", port))
            break
        except OSError:
            port = free_port()
    cfg = callback_cfg(endpoint, port, host="localhost")

    async def scenario() -> tuple[Page, TokenSet]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        state = state_of(attempt.authorize_url)
        v4 = await abrowse(port, "/callback?code=x&state=wrong", host="127.0.0.1")
        assert v4.status == 400
        v6 = await abrowse(port, f"/callback?code={CODE}&state={state}", host="::1")
        return v6, await waiter

    page, tokens = run(scenario())
    assert page.status == 200 and tokens.access_token == ACCESS
    assert refused(port, "127.0.0.1") and refused(port, "::1")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_literal_redirect_binds_only_ipv6(endpoint: FakeEndpoint) -> None:
    port = free_port("::1")
    cfg = callback_cfg(endpoint, port, host="[::1]")

    async def scenario() -> tuple[bool, bool]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        try:
            return refused(port, "::1"), refused(port, "127.0.0.1")
        finally:
            await attempt.close()

    assert run(scenario()) == (False, True)


def test_oversized_and_silent_connections_do_not_block(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    def huge_request() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /callback HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n")
            return sock.recv(100)

    async def scenario() -> tuple[bytes, TokenSet, float]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)  # a browser preconnect
        try:
            answer = await asyncio.to_thread(huge_request)
            state = state_of(attempt.authorize_url)
            await abrowse(port, f"/callback?code={CODE}&state={state}")
            started = time.monotonic()
            tokens = await waiter
            return answer, tokens, time.monotonic() - started
        finally:
            silent.close()

    answer, tokens, took = run(scenario())
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert tokens.access_token == ACCESS
    assert took < 3  # the silent connection was dropped, not waited for


def test_failed_exchange_shows_in_the_browser_and_raises(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(400, {"error": "invalid_grant", "error_description": "code expired"})
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[Page, TokenEndpointError]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        page = await abrowse(port, f"/callback?code={CODE}&state={state_of(attempt.authorize_url)}")
        with pytest.raises(TokenEndpointError) as info:
            await waiter
        return page, info.value

    page, error = run(scenario())
    assert "invalid_grant: code expired" in str(error)
    assert "Login failed" in page.body and "code expired" in page.body
    assert CODE not in page.body
    assert refused(port)


def test_close_without_callback_ends_a_waiter(endpoint: FakeEndpoint) -> None:
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> LoginError:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        await asyncio.sleep(0)  # let the waiter start waiting
        await attempt.close()
        with pytest.raises(LoginError) as info:
            await waiter
        return info.value

    assert "cancelled" in str(run(scenario()))
    assert refused(port)


def test_login_announces_and_opens_browser_off_the_loop(endpoint: FakeEndpoint) -> None:
    """The browser opener blocks (like `webbrowser` with a $BROWSER that waits) and returns
    False; the URL is announced anyway and the login completes through the callback."""
    endpoint.set_json(200, token_reply())
    port = free_port()
    cfg = callback_cfg(endpoint, port)
    announced: list[str] = []
    opened: list[str] = []
    release = threading.Event()

    def blocking_browser(url: str) -> bool:
        opened.append(url)
        # Qonic would redirect the browser to the callback; do that, then hang like a browser.
        query = urllib.parse.urlencode({"code": CODE, "state": state_of(url)})
        browse(port, f"/callback?{query}")
        release.wait(10)
        return False

    try:
        tokens = run(oauth.login(cfg, open_browser=blocking_browser, announce=announced.append))
    finally:
        release.set()
    assert tokens.access_token == ACCESS
    assert len(announced) == 1 and announced == opened
    assert urllib.parse.urlsplit(announced[0]).path == "/v1/auth/authorize"
    assert refused(port)


def test_login_without_browser_and_failing_browser(endpoint: FakeEndpoint) -> None:
    endpoint.set_json(200, token_reply())

    def finish_from_elsewhere(port: int, announced: list[str]) -> None:
        deadline = time.monotonic() + 10
        while not announced and time.monotonic() < deadline:
            time.sleep(0.01)
        browse(port, f"/callback?code={CODE}&state={state_of(announced[0])}")

    def broken_browser(url: str) -> bool:
        raise RuntimeError("no display")

    for opener in (None, broken_browser):
        port = free_port()
        cfg = callback_cfg(endpoint, port)
        announced: list[str] = []
        helper = threading.Thread(target=finish_from_elsewhere, args=(port, announced))
        helper.start()
        try:
            tokens = run(oauth.login(cfg, open_browser=opener, announce=announced.append))
        finally:
            helper.join(10)
        assert tokens.access_token == ACCESS


def test_login_attempt_repr_and_errors_hide_secrets(endpoint: FakeEndpoint) -> None:
    attempt = LoginAttempt(callback_cfg(endpoint, free_port()))
    assert attempt._verifier not in repr(attempt)  # noqa: SLF001
    assert SECRET not in attempt.authorize_url
    assert isinstance(LoginError("x"), QonicProxyError)


def test_connection_limit(endpoint: FakeEndpoint) -> None:
    """A flood of idle connections is capped; the extra ones are dropped at once."""
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> bytes:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        idle = [
            socket.create_connection(("127.0.0.1", port), timeout=5)
            for _ in range(oauth.MAX_CONNECTIONS)
        ]
        try:
            deadline = time.monotonic() + 5
            while len(attempt._tasks) < oauth.MAX_CONNECTIONS and time.monotonic() < deadline:  # noqa: SLF001
                await asyncio.sleep(0.01)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                extra.sendall(b"GET /callback HTTP/1.1\r\n\r\n")
                try:
                    return await asyncio.to_thread(extra.recv, 100)
                except ConnectionResetError:
                    return b""
        finally:
            for sock in idle:
                sock.close()
            await attempt.close()

    assert run(scenario()) == b""


def test_second_callback_during_exchange_gets_410(endpoint: FakeEndpoint) -> None:
    """Once a valid code arrived, nothing else is accepted, even a replay of the same URL."""
    exchanging = threading.Event()
    release = threading.Event()

    def slow_reply(request: Recorded) -> Reply:
        exchanging.set()
        release.wait(10)
        return 200, {"Content-Type": "application/json"}, json_body(token_reply())

    endpoint.reply = slow_reply
    port = free_port()
    cfg = callback_cfg(endpoint, port)

    async def scenario() -> tuple[Page, Page, TokenSet]:
        attempt = LoginAttempt(cfg)
        await attempt.start()
        waiter = asyncio.create_task(attempt.wait(10))
        target = f"/callback?code={CODE}&state={state_of(attempt.authorize_url)}"
        first = asyncio.create_task(abrowse(port, target))
        try:
            assert await asyncio.to_thread(exchanging.wait, 10)
            replay = await abrowse(port, target)
        finally:
            release.set()
        return await first, replay, await waiter

    first, replay, tokens = run(scenario())
    assert first.status == 200 and tokens.access_token == ACCESS
    assert replay.status == 410 and "already" in replay.body
    assert_safe_page(replay)
    assert len(endpoint.requests) == 1
