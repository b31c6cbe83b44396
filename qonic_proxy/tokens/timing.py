"""When the token service acts: refresh due times, back-offs and the intervals it waits.

Kept apart from the service so the rules about time can be read (and tested) without the
asyncio machinery: a token is replaced `margin` seconds before expiry (but never before half its
life), a failure holds the next attempt back for a while, and waits are bounded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from qonic_proxy.oauth.tokenset import TokenSet

REFRESH_TIMEOUT = 45.0  # bounds how long a request waits for a refresh (token request + file lock)
REFRESH_BACKOFF = 60.0  # the longest wait between failed refreshes (a Retry-After may ask more)
BACKOFF_BASE = 1.0  # the wait after the first failed refresh (before jitter)
RETRY_AFTER_CAP = 300.0  # a Retry-After longer than this is not honoured beyond it
SAVE_RETRY_INTERVAL = 5.0  # how often an unsaved token cache is written again
STORE_POLL_INTERVAL = 1.0  # how often the cache file is checked for a login done by another process
LOGIN_RETRY_COOLDOWN = 30.0  # after a failed login, requests do not open a new one sooner


def refresh_due_at(tokens: TokenSet, margin: float) -> float | None:
    """When `tokens` should be replaced: `margin` s before expiry, but never before half its life.

    Without the half-life cap a token that lives shorter than the margin (a 60 s token with a
    300 s margin) would be "due" the moment it arrives, and every refresh would start the next.
    """
    if tokens.expires_at is None:
        return None
    lifetime = tokens.expires_at - tokens.obtained_at
    if lifetime > 0:
        margin = min(margin, lifetime / 2)
    return tokens.expires_at - margin


class Cooldown:
    """After a failure, the next attempt waits `seconds` (monotonic time: clock changes are moot).

    A burst of requests against a failing token endpoint, or a denied login, must not turn into a
    burst of token requests or browser tabs.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.failed_at: float | None = None

    def fail(self) -> None:
        self.failed_at = self.clock()

    def clear(self) -> None:
        self.failed_at = None

    @property
    def active(self) -> bool:
        """True while the last failure is more recent than `seconds`."""
        return self.failed_at is not None and self.clock() - self.failed_at < self.seconds


def backoff_delay(failures: int, retry_after: float | None,
                  uniform: Callable[[float, float], float] = random.uniform) -> float:
    """The wait after the `failures`-th failure in a row: exponential, jittered, capped.

    min(60, 1 * 2**(n-1)) * uniform(0.5, 1.0); a Retry-After r lengthens it to min(r, 300).
    """
    exponent = min(max(failures, 1) - 1, 16)  # 2**16 is far past the cap already
    delay: float = min(REFRESH_BACKOFF, BACKOFF_BASE * 2**exponent) * uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay


class Backoff:
    """Failed refreshes in a row and when the next one may start (monotonic time)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.clock = clock
        self.uniform = uniform
        self.failures = 0
        self.failed_at: float | None = None
        self.delay = 0.0

    def fail(self, retry_after: float | None = None) -> float:
        """Count a failure; returns the seconds until the next attempt."""
        self.failures += 1
        self.failed_at = self.clock()
        self.delay = backoff_delay(self.failures, retry_after, self.uniform)
        return self.delay

    def clear(self) -> None:
        self.failures, self.failed_at, self.delay = 0, None, 0.0

    def remaining(self) -> float:
        """Seconds until the next attempt may start (0 when it may start now)."""
        if self.failed_at is None:
            return 0.0
        return max(0.0, self.failed_at + self.delay - self.clock())

    @property
    def active(self) -> bool:
        return self.remaining() > 0
