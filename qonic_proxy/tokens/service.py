"""The live token: expiry, single-flight refresh, and browser logins while the daemon keeps running.

The addon asks `get_access_token()` for every API request. Almost always that is a dictionary-speed
answer; near expiry exactly one refresh runs and every concurrent caller waits for it. When no
refresh is possible the service switches to "login required": callers get None at once (never a
hang), a login is offered, and service resumes the moment the callback completes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from qonic_proxy.config.model import Config
from qonic_proxy.errors import LoginError, QonicProxyError, TokenEndpointError
from qonic_proxy.metrics import Metrics
from qonic_proxy.oauth.callback import LoginAttempt
from qonic_proxy.oauth.client import refresh_tokens
from qonic_proxy.oauth.login import open_browser_in_background
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.advice import announce_login, login_advice, no_browser_here
from qonic_proxy.tokens.health import health_body, rounded
from qonic_proxy.tokens.outage import (
    Outage,
    RefreshResult,
    UnsavedTokens,
    failure_facts,
    whole_seconds,
)
from qonic_proxy.tokens.refresh import refresh_shared
from qonic_proxy.tokens.store import CacheWriteError, TokenStore
from qonic_proxy.tokens.timing import (
    LOGIN_RETRY_COOLDOWN,
    REFRESH_TIMEOUT,
    STORE_POLL_INTERVAL,
    Backoff,
    Cooldown,
    refresh_due_at,
)

__all__ = ["Outage", "RefreshResult", "TokenService", "refresh_due_at"]

log = logging.getLogger("qonic_proxy.tokens")

GRANT_LOST = {"invalid_grant", "unauthorized_client", "invalid_client"}


class TokenService:
    """Owns the current TokenSet; the only code that decides when to refresh or log in."""

    def __init__(
        self,
        cfg: Config,
        store: TokenStore,
        *,
        metrics: Metrics | None = None,
        open_browser: Callable[[str], object] | None = None,
        login_page_url: Callable[[], str | None] = lambda: None,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        uniform: Callable[[float, float], float] = random.uniform,
        environ: Mapping[str, str] = os.environ,
        scripted_browser: bool = False,  # the demo's: nobody needs to open the URL
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.open_browser = open_browser
        self.login_page_url = login_page_url
        self.on_change = on_change
        self.clock = clock
        self.environ = environ
        self.scripted_browser = scripted_browser
        self._tokens: TokenSet | None = None
        self._refresh_lock = asyncio.Lock()
        self._login: LoginAttempt | None = None
        self._login_task: asyncio.Task[None] | None = None
        self._login_received = False
        self._store_mtime: int | None = None
        self._refresh_backoff = Backoff(monotonic, uniform)
        self._outage: Outage | None = None
        self._rejected: str | None = None  # an access token Qonic answered 401 to
        self._unsaved = UnsavedTokens(store)
        self.last_refresh: RefreshResult | None = None
        self.last_login_error: str | None = None
        self._login_cooldown = Cooldown(LOGIN_RETRY_COOLDOWN)
        self.refresh_count = 0

    # ----- reading state -------------------------------------------------------------------
    @property
    def tokens(self) -> TokenSet | None:
        return self._tokens

    def seconds_until_expiry(self) -> float | None:
        if self._tokens is None or self._tokens.expires_at is None:
            return None
        return self._tokens.expires_at - self.clock()

    def is_usable(self) -> bool:
        """True when a token is held that has not expired (a refresh may still be due)."""
        remaining = self.seconds_until_expiry()
        return (self._tokens is not None and (remaining is None or remaining > 0)
                and self._tokens.access_token != self._rejected)

    def _needs_refresh(self, tokens: TokenSet) -> bool:
        if tokens.access_token == self._rejected:
            return True
        due = refresh_due_at(tokens, self.cfg.token.refresh_margin)
        return due is not None and due <= self.clock()

    def refresh_due_in(self) -> float | None:
        """Seconds until the held token is due for a refresh (negative: overdue)."""
        if self._tokens is not None and self._tokens.access_token == self._rejected:
            return 0.0
        due = refresh_due_at(self._tokens, self.cfg.token.refresh_margin) if self._tokens else None
        return None if due is None else due - self.clock()

    def next_attempt_in(self) -> float:  # until a failed refresh may be tried again (0: now)
        return self._refresh_backoff.remaining()

    @property
    def outage(self) -> Outage | None:
        """Set while refreshing fails for a transient reason (the grant is kept)."""
        return self._outage

    def unavailable(self) -> Outage | None:
        """The outage, when it leaves no usable token: requests get 503, not a login."""
        if self._outage is None or self._tokens is None or self.is_usable():
            return None
        return self._outage

    @property  # the cache could not be written: why (in few words, in a sentence, at shutdown)
    def unsaved_reason(self) -> str | None: return self._unsaved.reason  # noqa: E704

    @property
    def unsaved_error(self) -> str | None: return self._unsaved.sentence()  # noqa: E704

    def shutdown_warning(self) -> str | None:
        return self._unsaved.shutdown_warning()

    async def retry_save(self) -> None:
        """Write the tokens held only in memory, if any (every 5 s, and before a refresh)."""
        if self._unsaved.tokens is not None:
            async with self._refresh_lock:
                await self._retry_save_locked()

    async def _retry_save_locked(self) -> None:
        if self._unsaved.tokens is not None:
            await asyncio.to_thread(self._unsaved.save)
            self._store_mtime = self.store.mtime_ns()

    @property
    def login_pending(self) -> bool:
        return self._login_task is not None and not self._login_task.done()

    @property
    def pending_login(self) -> tuple[LoginAttempt, asyncio.Task[None]] | None:  # and its task
        task, attempt = self._login_task, self._login
        return (attempt, task) if task and not task.done() and attempt else None

    @property
    def pending_authorize_url(self) -> str | None:
        return pending[0].authorize_url if (pending := self.pending_login) else None

    def what_to_do(self) -> str:
        """The one sentence shown to people and scripts when a login is needed."""
        return login_advice(page=self.login_page_url(), authorize_url=self.pending_authorize_url,
                            headless=no_browser_here(self.environ),
                            last_error=None if self.is_usable() else self.last_login_error)

    def health(self) -> dict[str, Any]:  # the /-/health body (no secret in it)
        return health_body(self)

    # ----- the cache file ------------------------------------------------------------------
    def load_from_store(self) -> bool:
        """Adopt the cached token (at start, on SIGHUP, or when another process wrote one)."""
        self._store_mtime = self.store.mtime_ns()
        tokens = self.store.load()
        if tokens is None:
            return False
        held = self._tokens
        if held is not None and tokens.obtained_at < held.obtained_at:
            log.info("the token cache %s is older than the tokens held; keeping those",
                     self.store.path)
            return True  # never move backwards: its refresh token may be spent already
        self._unsaved.saved()  # what the file holds is at least as new
        self._adopt(tokens)
        return True

    async def watch_store(self) -> None:
        """Adopt tokens that `qonic-proxy login` (or a sibling daemon) wrote: no restart needed."""
        while True:
            await asyncio.sleep(STORE_POLL_INTERVAL)
            try:
                mtime = self.store.mtime_ns()
                if mtime != self._store_mtime:
                    self._store_mtime = mtime
                    if mtime is None:
                        if self._tokens is not None:
                            log.warning("the token cache was deleted (logout); a login is needed")
                            self._tokens = None
                            self._unsaved.forget()
                            self.on_change()
                    elif self.load_from_store():
                        log.info("picked up a new token from %s", self.store.path)
                        if self.is_usable():
                            await self._cancel_login("another process logged in")
            except QonicProxyError as err:
                log.error("%s", err)

    def _adopt(self, tokens: TokenSet) -> None:
        if self._outage is not None:
            log.info("the token endpoint answers again (after %d failed attempts)",
                     self._outage.failures)
        self._tokens = tokens
        self._refresh_backoff.clear()
        self._outage = None
        self._rejected = None
        self.last_login_error = None
        self.on_change()

    # ----- the hot path --------------------------------------------------------------------
    async def get_access_token(self) -> str | None:
        """A token fit to send now, refreshing first when it is due; None when a login is needed."""
        tokens = self._tokens
        if tokens is None:
            return None
        if not self._needs_refresh(tokens):
            return tokens.access_token
        if tokens.refresh_token:
            refreshed = await self.refresh(tokens.access_token)
            if refreshed:
                return refreshed
        elif not self.login_pending:
            # nothing to refresh with: ask for a login while the old token still works
            log.info("the access token runs out soon and there is no refresh token")
            self.offer_login()
        return self._tokens.access_token if self.is_usable() and self._tokens else None

    async def refresh(self, stale_access_token: str, *, force: bool = False) -> str | None:
        """Replace `stale_access_token`, once, however many callers ask at the same time.

        `force` is for a 401 from the API: the token looked valid to us but not to Qonic.
        Callers that queued behind a refresh share its outcome, success or failure (a failure
        starts a back-off), so a burst of requests never becomes a burst of token requests,
        even when the token endpoint is failing. None means no new token.
        """
        async with self._refresh_lock:
            current = self._tokens
            if current is None:
                return None
            if current.access_token != stale_access_token:
                return current.access_token  # somebody refreshed while we waited
            if not force and not self._needs_refresh(current):
                return current.access_token
            if self._refresh_backoff.active and (not force or self._outage is not None):
                if force:
                    self._rejected = stale_access_token  # includes callers that queued behind
                return None  # the refresh that just failed
            if not current.refresh_token:
                if force:
                    self._lose_token("Qonic rejected the access token; there is no refresh token")
                return None
            await self._retry_save_locked()
            try:
                new, spent, unsaved = await asyncio.wait_for(asyncio.to_thread(
                    refresh_shared, self.cfg, self.store, current, refresh_tokens,
                    self._needs_refresh), REFRESH_TIMEOUT)
            except (TokenEndpointError, QonicProxyError, TimeoutError) as err:
                self._refresh_failed(err, stale_access_token, force=force)
                return None
            if unsaved is not None:
                self._unsaved.hold(new, unsaved)
            else:
                self._unsaved.saved()
            self._adopt(new)
            self._store_mtime = self.store.mtime_ns()
            if spent:
                self.refresh_count += 1
                self.last_refresh = RefreshResult(self.clock(), "ok")
                self._count("refreshes", "ok")
            log.info("%s; valid for %s s", "access token refreshed" if spent else
                     "using the token another qonic-proxy process refreshed",
                     rounded(self.seconds_until_expiry()))
            return new.access_token

    def _refresh_failed(self, err: Exception, stale: str, *, force: bool) -> None:
        """Back off; a transient failure keeps the grant (an outage), only a lost grant logs out."""
        transient, retry_after, reason, detail = failure_facts(err)
        delay = self._refresh_backoff.fail(retry_after)
        now = self.clock()
        self.last_refresh = RefreshResult(now, "error", detail)
        self._count("refreshes", "error")
        if self.metrics is not None:
            self.metrics.refresh_failures.inc(reason)
        log.warning("token refresh failed: %s; next attempt in %d s", detail, whole_seconds(delay))
        if transient:
            since = self._outage.since if self._outage else now
            self._outage = Outage(reason, detail, since, now + delay,
                                  self._refresh_backoff.failures)
            if force:
                self._rejected = stale
            self.on_change()
            return
        self._outage = None
        if isinstance(err, TokenEndpointError) and err.error_code in GRANT_LOST:
            self._lose_token("the refresh token is no longer valid")
        elif force:
            self._lose_token("Qonic rejected the access token and refreshing failed")

    def _lose_token(self, why: str) -> None:
        log.warning("%s; %s", why, self.what_to_do())
        self._tokens = None
        self.on_change()
        self.offer_login()

    # ----- logins --------------------------------------------------------------------------
    def offer_login(self) -> None:
        """Start a background login unless one is waiting or one just failed (never raises).

        Requests keep arriving while logged out; without the cool-down each one after a denied
        login would open another browser tab. /-/login and `qonic-proxy login` are not limited.
        """
        if self.login_pending or self._login_cooldown.active:
            return
        if self.unavailable() is not None:
            return  # the grant is fine; only the token endpoint is down for now
        task = asyncio.get_running_loop().create_task(self._offer_login_safely())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _offer_login_safely(self) -> None:
        try:
            await self.start_login()
        except QonicProxyError as err:
            self.last_login_error = str(err)
            log.error("%s", err)

    async def start_login(self) -> str:
        """Begin (or join) a browser login; returns the authorize URL to send the browser to."""
        if (pending_url := self.pending_authorize_url) is not None:
            return pending_url
        attempt = LoginAttempt(self.cfg)
        await attempt.start()
        self._login, self._login_received = attempt, False
        self._login_task = asyncio.get_running_loop().create_task(self._finish_login(attempt))
        self.on_change()
        announce_login(log, attempt.authorize_url, headless=no_browser_here(self.environ),
                       replacing=self.is_usable(), scripted=self.scripted_browser)
        if self.cfg.oauth.open_browser and self.open_browser is not None:
            open_browser_in_background(self.open_browser, attempt.start_url)
        return attempt.authorize_url

    async def _finish_login(self, attempt: LoginAttempt) -> None:
        try:
            tokens = await attempt.wait()
            self._login_received = True  # from here on, finishing must not be cancelled
            await asyncio.to_thread(self.store.save, tokens)
        except CacheWriteError as err:
            self._unsaved.hold(tokens, err)  # logged in all the same; the save is retried
        except (LoginError, TokenEndpointError, QonicProxyError) as err:
            self.last_login_error = str(err)
            self._login_cooldown.fail()
            self._count("logins", "error")
            log.error("login failed: %s", err)
            self.on_change()
            return
        finally:
            await attempt.close()
        self._store_mtime = self.store.mtime_ns()
        self._count("logins", "ok")
        if self._unsaved.tokens is not tokens:
            self._unsaved.saved()
        self._adopt(tokens)  # the "logged in" line itself comes from the login (oauth.callback)
        log.info("the new token is in use; valid for %s s", rounded(self.seconds_until_expiry()))

    async def _cancel_login(self, why: str) -> None:
        """Stop a pending login (it holds the callback port) that is no longer needed."""
        if not self.login_pending or self._login_received:
            return
        log.info("%s; the pending browser login is no longer needed", why)
        await self.close()
        self.on_change()

    async def close(self) -> None:
        if self._login_task is not None and not self._login_task.done():
            self._login_task.cancel()
            await asyncio.gather(self._login_task, return_exceptions=True)
        if self._login is not None:
            await self._login.close()

    def _count(self, series: str, outcome: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, series).inc(outcome)

