"""The authorization response rules, without a socket: path, method, state, code or error."""

from __future__ import annotations

import hmac

import pytest

from qonic_proxy.oauth import authorization_response as ar
from qonic_proxy.oauth.authorization_response import (
    AuthorizationResponse,
    BadRequest,
    parse_authorization_response,
)

STATE = "s" * 43


def check(target: str, method: str = "GET") -> AuthorizationResponse:
    return parse_authorization_response(method, target, path="/callback", state=STATE)


def status_of(target: str, method: str = "GET") -> int:
    with pytest.raises(BadRequest) as info:
        check(target, method)
    return info.value.status


def test_a_code_and_an_error() -> None:
    got = check(f"/callback?code=abc&state={STATE}&scope=x#frag")
    assert got == AuthorizationResponse(code="abc") and "abc" not in repr(got)
    got = check(f"/callback?error=access_denied&error_description=no%0Athanks&state={STATE}")
    assert got == AuthorizationResponse(error="access_denied", description="no thanks")


@pytest.mark.parametrize(
    ("target", "method", "status"),
    [
        ("/callbackX?code=a", "GET", 404),
        ("/", "GET", 404),
        ("*", "GET", 400),
        ("http://127.0.0.1/callback", "GET", 400),
        (f"/callback?code=a&state={STATE}", "POST", 405),
        (f"/callback?code=a&state={STATE}", "get", 405),
        (f"/callback?code=a&state={STATE}&state={STATE}", "GET", 400),
        (f"/callback?code=a&code=b&state={STATE}", "GET", 400),
        (f"/callback?code=a&error=e&state={STATE}", "GET", 400),
        (f"/callback?state={STATE}", "GET", 400),
        (f"/callback?code=&state={STATE}", "GET", 400),
        ("/callback?code=a&state=wrong", "GET", 400),
        ("/callback?code=a", "GET", 400),
        (f"/callback?code=%ff&state={STATE}", "GET", 400),
        (f"/callback?code=a&state={STATE}&junk", "GET", 400),
    ],
)
def test_everything_else_is_refused(target: str, method: str, status: int) -> None:
    assert status_of(target, method) == status


def test_state_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(ar.hmac, "compare_digest", compare)
    check(f"/callback?code=a&state={STATE}")
    assert calls == [(STATE.encode(), STATE.encode())]


def test_too_many_fields_are_refused() -> None:
    query = "&".join(f"x{i}=1" for i in range(ar.MAX_FIELDS + 1))
    assert status_of(f"/callback?{query}&code=a&state={STATE}") == 400
