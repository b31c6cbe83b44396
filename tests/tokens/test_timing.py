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


def top(low: float, high: float) -> float:
    return high


def bottom(low: float, high: float) -> float:
    return low


def test_backoff_doubles_from_one_second_up_to_a_minute() -> None:
    from qonic_proxy.tokens.timing import backoff_delay

    assert [backoff_delay(n, None, top) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert [backoff_delay(n, None, bottom) for n in (1, 2, 7, 1000)] == [0.5, 1, 30, 30]


def test_jitter_is_between_half_and_the_whole_wait() -> None:
    from qonic_proxy.tokens.timing import backoff_delay

    seen: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        seen.append((low, high))
        return 0.75

    assert backoff_delay(3, None, uniform) == 3.0 and seen == [(0.5, 1.0)]


def test_retry_after_lengthens_the_wait_up_to_five_minutes() -> None:
    from qonic_proxy.tokens.timing import backoff_delay

    assert backoff_delay(1, 30, top) == 30
    assert backoff_delay(7, 10, top) == 60  # shorter than the back-off: the back-off
    assert backoff_delay(1, 86400, top) == 300
    assert backoff_delay(1, 0, bottom) == 0.5


def test_backoff_counts_failures_and_resets() -> None:
    from qonic_proxy.tokens.timing import Backoff

    now = [100.0]
    backoff = Backoff(clock=lambda: now[0], uniform=top)
    assert not backoff.active and backoff.remaining() == 0
    assert backoff.fail() == 1 and backoff.fail() == 2 and backoff.failures == 2
    now[0] += 1.5
    assert backoff.active and backoff.remaining() == 0.5
    assert backoff.fail(retry_after=20) == 20
    now[0] += 20
    assert not backoff.active
    backoff.clear()
    assert backoff.failures == 0 and backoff.fail() == 1
