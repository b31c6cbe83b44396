"""The two degraded states that must never cost the login: an outage and an unsaved cache.

An outage is a run of transient token-endpoint failures (see TokenEndpointError.transient): the
grant is fine, the refresh is retried with back-off, and people are told so. An unsaved cache
is a refresh whose result could not be written: the newest tokens live in memory until a save
succeeds, because the refresh token on disk was already spent.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from qonic_proxy.errors import QonicProxyError, TokenEndpointError
from qonic_proxy.oauth.messages import describe_reason
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.store import CacheWriteError, TokenStore
from qonic_proxy.tokens.timing import SAVE_RETRY_INTERVAL

log = logging.getLogger("qonic_proxy.tokens")

OUTAGE_ACTION = ("Nothing to do: qonic-proxy keeps the login and retries; check Qonic's status "
                 "if this lasts.")


@dataclass
class RefreshResult:
    at: float
    outcome: str  # "ok" or "error"
    detail: str | None = None


def failure_facts(err: Exception) -> tuple[bool, float | None, str, str]:
    """(transient, Retry-After seconds, metrics reason, sentence) of a failed refresh."""
    if isinstance(err, TokenEndpointError):
        return err.transient, err.retry_after, err.reason, str(err)
    if isinstance(err, TimeoutError):  # the whole refresh (lock and request) took too long
        return True, None, "timeout", str(err) or "the token refresh timed out"
    return False, None, "local", str(err)


@dataclass(frozen=True)
class Outage:
    """Why refreshing fails for now, since when, and when the next attempt is (service clock)."""

    reason: str  # the metrics label: http_503, timeout, connection_refused, ...
    message: str  # the last error's sentence
    since: float
    next_attempt_at: float
    failures: int

    def headline(self) -> str:
        return f"Qonic's token endpoint is unavailable ({describe_reason(self.reason)})"


def whole_seconds(seconds: float) -> int:
    """A wait as people and Retry-After read it: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


class UnsavedTokens:
    """The newest tokens while the cache cannot be written; says so once, not per request."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self.tokens: TokenSet | None = None
        self.error: CacheWriteError | None = None

    @property
    def reason(self) -> str | None:
        return self.error.reason if self.tokens is not None and self.error else None

    def hold(self, tokens: TokenSet, error: CacheWriteError) -> None:
        if self.tokens is None:
            log.warning("cannot write the token cache %s (%s); keeping the new tokens in memory "
                        "and retrying the save every %g s", self.store.path, error.reason,
                        SAVE_RETRY_INTERVAL)
        self.tokens, self.error = tokens, error

    def forget(self) -> None:
        """A logout happened: nothing is pending any more."""
        self.tokens = self.error = None

    def saved(self) -> None:
        """Tokens at least as new as the held ones are on disk now."""
        if self.tokens is not None:
            log.info("saved the token cache %s again", self.store.path)
        self.forget()

    def save(self) -> None:
        """Blocking (run it in a thread): write the held tokens unless the file is newer."""
        tokens = self.tokens
        if tokens is None:
            return
        try:
            with self.store.refresh_lock():
                on_disk = self.store.load()
                if on_disk is None or on_disk.obtained_at <= tokens.obtained_at:
                    self.store.save(tokens)
        except CacheWriteError as err:
            self.error = err
            return
        except QonicProxyError as err:  # the lock: try again at the next retry
            log.debug("the token cache save waits: %s", err)
            return
        if self.tokens is tokens:
            self.saved()

    def sentence(self) -> str | None:
        if self.reason is None:
            return None
        return (f"cannot write the token cache {self.store.path} ({self.reason}); the newest "
                "tokens are only in memory")

    def shutdown_warning(self) -> str | None:
        if self.reason is None:
            return None
        return (f"stopping with the newest tokens unsaved (cannot write {self.store.path}: "
                f"{self.reason}); the next start will need a browser login unless the cache is "
                "written first")
