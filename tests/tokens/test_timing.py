"""Tests for qonic_proxy.tokens.timing: refresh due times and the failure cool-down."""

from __future__ import annotations

import pytest

from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.timing import Cooldown, refresh_due_at


def tokens(obtained_at: float, expires_at: float | None) -> TokenSet:
    return TokenSet(access_token="a", refresh_token="r", expires_at=expires_at,
                    obtained_at=obtained_at, scopes=(), token_type="Bearer")


@pytest.mark.parametrize(
    ("obtained", "expires", "margin", "due"),
    [
        (0, 600, 60, 540),  # the margin before expiry
        (0, 60, 300, 30),  # never before half its life
        (0, 600, 0, 600),
        (100, 50, 60, -10),  # an odd clock: expiry before issue keeps the plain margin
    ],
)
def test_refresh_due_at(obtained: float, expires: float, margin: float, due: float) -> None:
    assert refresh_due_at(tokens(obtained, expires), margin) == due


def test_a_token_without_expiry_is_never_due() -> None:
    assert refresh_due_at(tokens(0, None), 60) is None


def test_cooldown_holds_back_until_its_time_has_passed() -> None:
    now = [100.0]
    cooldown = Cooldown(5, clock=lambda: now[0])
    assert not cooldown.active
    cooldown.fail()
    assert cooldown.active
    now[0] += 4.9
    assert cooldown.active
    now[0] += 0.2
    assert not cooldown.active
    cooldown.fail()
    cooldown.clear()
    assert not cooldown.active and cooldown.failed_at is None
