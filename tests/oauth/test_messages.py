"""The words of OAuth failures: cleaning, redaction, advice, and one sentence per network error."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest

from qonic_proxy.oauth import messages

URL = "https://auth.example/v1/auth/token"


def test_clean_removes_control_and_format_characters_and_bounds_the_text() -> None:
    assert messages.clean("a\x1b[1m\r\nb\u202ec\t d") == "a [1m b c d"
    assert messages.clean("x" * 50, limit=10) == "x" * 9 + "…"


def test_redact_replaces_every_sent_value_but_not_tiny_ones() -> None:
    text = "code abcdef and verifier 0123456789 and id ab"
    assert messages.redact(text, ["abcdef", None, "0123456789", "ab"]) == (
        "code [redacted] and verifier [redacted] and id ab"
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("invalid_client", 400, "client_id"),
        (None, 401, "client secret"),
        ("invalid_grant", 400, "qonic-proxy login"),
        ("invalid_scope", 400, "[oauth] scopes"),
        ("unsupported_grant_type", 400, "grant type"),
        ("invalid_request", 400, "redirect_uri"),
        ("server_error", 200, "try again later"),
        (None, 502, "try again later"),
        ("something_else", 400, "[oauth] settings"),
    ],
)
def test_advice_per_error_code(code: str | None, status: int, expected: str) -> None:
    assert expected in messages.advice(code, status)


def test_server_error_reads_rfc6749_qonic_and_problem_details() -> None:
    assert messages.server_error({"error": "invalid_grant", "error_description": "gone"}) == (
        "invalid_grant",
        "gone",
    )
    assert messages.server_error({"errorDescription": "x", "errorDetails": {"message": "y"}}) == (
        None,
        "x y",
    )
    assert messages.server_error({"title": "Forbidden"}) == (None, "Forbidden")
    assert messages.server_error(["not", "a", "dict"]) == (None, "")


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (TimeoutError(), "timeout", "did not answer within 2.5 s"),
        (ssl.SSLCertVerificationError("bad"), "tls_verify", "[qonic] ca_file"),
        (ssl.SSLError("handshake"), "tls", "TLS handshake"),
        (ConnectionRefusedError(), "connection_refused", "refused the connection"),
        (socket.gaierror(socket.EAI_NONAME, "no"), "dns", "auth.example of the token"),
        (http.client.RemoteDisconnected("gone"), "network", "closed the connection"),
        (OSError(101, "Network is unreachable"), "network", "(Network is unreachable)"),
    ],
)
def test_network_error_is_one_sentence(exc: BaseException, code: str, words: str) -> None:
    error = messages.network_error(exc, URL, 2.5)
    assert error.error_code == code and words in str(error)
    assert "\n" not in str(error) and "[qonic]" in str(error)


def test_refusal_message() -> None:
    assert messages.refusal_message("access_denied", None) == (
        "Qonic refused the login: access_denied; run `qonic-proxy login` again and approve the "
        "access"
    )
    text = messages.refusal_message("invalid_scope", "unknown scope")
    assert text.startswith("Qonic refused the login: invalid_scope: unknown scope; check [oauth]")


@pytest.mark.parametrize(("reason", "words"), [
    ("http_503", "HTTP 503"),
    ("http_429", "HTTP 429"),
    ("timeout", "no answer in time"),
    ("connection_refused", "connection refused"),
    ("dns", "its host name does not resolve"),
    ("tls_verify", "its TLS certificate could not be verified"),
    ("something_else", "something else"),
])
def test_describe_reason(reason: str, words: str) -> None:
    assert messages.describe_reason(reason) == words


@pytest.mark.parametrize(("exc", "code"), [
    (TimeoutError(), "timeout"),
    (ConnectionRefusedError(), "connection_refused"),
    (ConnectionResetError(), "network"),
    (socket.gaierror(), "dns"),
    (ssl.SSLError(), "tls"),
])
def test_network_errors_are_transient(exc: BaseException, code: str) -> None:
    error = messages.network_error(exc, URL, 5)
    assert error.error_code == code and error.transient and error.reason == code
