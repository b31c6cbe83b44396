"""When the token service acts: refresh due times, back-offs and the intervals it waits.

Kept apart from the service so the rules about time can be read (and tested) without the
asyncio machinery: a token is replaced `margin` seconds before expiry (but never before half its
life), a failure holds the next attempt back for a while, and waits are bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from qonic_proxy.oauth.tokenset import TokenSet

REFRESH_TIMEOUT = 45.0  # bounds how long a request waits for a refresh (token request + file lock)
REFRESH_BACKOFF = 5.0  # after a failed refresh, wait this long before the next (unless a 401)
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
