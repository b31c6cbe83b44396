"""The live token: expiry, single-flight refresh, and browser logins while the daemon keeps running.

The addon asks `get_access_token()` for every API request. Almost always that is a dictionary-speed
answer; near expiry exactly one refresh runs and every concurrent caller waits for it. When no
refresh is possible the service switches to "login required": callers get None at once (never a
hang), a login is offered, and service resumes the moment the callback completes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qonic_proxy.config.model import Config
from qonic_proxy.errors import LoginError, QonicProxyError, TokenEndpointError
from qonic_proxy.metrics import Metrics
from qonic_proxy.oauth.callback import LoginAttempt
from qonic_proxy.oauth.client import refresh_tokens
from qonic_proxy.oauth.login import open_browser_in_background
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.store import TokenStore
from qonic_proxy.tokens.timing import (
    LOGIN_RETRY_COOLDOWN,
    REFRESH_BACKOFF,
    REFRESH_TIMEOUT,
    STORE_POLL_INTERVAL,
    Cooldown,
    refresh_due_at,
)

__all__ = ["RefreshResult", "TokenService", "refresh_due_at"]

log = logging.getLogger("qonic_proxy.tokens")

GRANT_LOST = {"invalid_grant", "unauthorized_client", "invalid_client"}


@dataclass
class RefreshResult:
    at: float
    outcome: str  # "ok" or "error"
    detail: str | None = None


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
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.open_browser = open_browser
        self.login_page_url = login_page_url
        self.on_change = on_change
        self.clock = clock
        self._tokens: TokenSet | None = None
        self._refresh_lock = asyncio.Lock()
        self._login: LoginAttempt | None = None
        self._login_task: asyncio.Task[None] | None = None
        self._login_received = False
        self._store_mtime: int | None = None
        self._refresh_backoff = Cooldown(REFRESH_BACKOFF)
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
        return self._tokens is not None and (remaining is None or remaining > 0)

    def _needs_refresh(self, tokens: TokenSet) -> bool:
        due = refresh_due_at(tokens, self.cfg.token.refresh_margin)
        return due is not None and due <= self.clock()

    def refresh_due_in(self) -> float | None:
        """Seconds until the held token is due for a refresh (negative: overdue)."""
        due = refresh_due_at(self._tokens, self.cfg.token.refresh_margin) if self._tokens else None
        return None if due is None else due - self.clock()

    @property
    def login_pending(self) -> bool:
        return self._login_task is not None and not self._login_task.done()

    @property
    def pending_authorize_url(self) -> str | None:
        return self._login.authorize_url if self.login_pending and self._login else None

    def what_to_do(self) -> str:
        """The one sentence shown to people and scripts when a login is needed."""
        page = self.login_page_url()
        where = f"open {page} in a browser, or " if page else ""
        return f"Log in to Qonic: {where}run `qonic-proxy login`."

    def health(self) -> dict[str, Any]:
        usable = self.is_usable()
        body: dict[str, Any] = {
            "status": "ok" if usable else "login_required",
            "logged_in": usable,
            "expires_in": _rounded(self.seconds_until_expiry()),
            "scopes": list(self._tokens.scopes) if self._tokens else [],
            "refresh_token": bool(self._tokens and self._tokens.refresh_token),
            "login_in_progress": self.login_pending,
            "last_refresh": None,
        }
        if self.last_refresh:
            body["last_refresh"] = {
                "at": round(self.last_refresh.at),
                "outcome": self.last_refresh.outcome,
                "detail": self.last_refresh.detail,
            }
        if not usable:
            body["action"] = self.what_to_do()
            if self.last_login_error:
                body["last_login_error"] = self.last_login_error
        return body

    # ----- the cache file ------------------------------------------------------------------
    def load_from_store(self) -> bool:
        """Adopt the cached token (at start, on SIGHUP, or when another process wrote one)."""
        self._store_mtime = self.store.mtime_ns()
        tokens = self.store.load()
        if tokens is None:
            return False
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
                            self.on_change()
                    elif self.load_from_store():
                        log.info("picked up a new token from %s", self.store.path)
                        if self.is_usable():
                            await self._cancel_login("another process logged in")
            except QonicProxyError as err:
                log.error("%s", err)

    def _adopt(self, tokens: TokenSet) -> None:
        self._tokens = tokens
        self._refresh_backoff.clear()
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
            if not force and self._refresh_backoff.active:
                return None  # includes callers that queued behind the refresh that just failed
            if not current.refresh_token:
                if force:
                    self._lose_token("Qonic rejected the access token; there is no refresh token")
                return None
            try:
                new, spent = await asyncio.wait_for(
                    asyncio.to_thread(self._refresh_with_file_lock, current), REFRESH_TIMEOUT
                )
            except (TokenEndpointError, QonicProxyError, TimeoutError) as err:
                self._refresh_backoff.fail()
                detail = str(err) or "the token refresh timed out"
                self.last_refresh = RefreshResult(self.clock(), "error", detail)
                self._count("refreshes", "error")
                log.warning("token refresh failed: %s", detail)
                if isinstance(err, TokenEndpointError) and err.error_code in GRANT_LOST:
                    self._lose_token("the refresh token is no longer valid")
                elif force:
                    self._lose_token("Qonic rejected the access token and refreshing failed")
                return None
            self._adopt(new)
            self._store_mtime = self.store.mtime_ns()
            if spent:
                self.refresh_count += 1
                self.last_refresh = RefreshResult(self.clock(), "ok")
                self._count("refreshes", "ok")
                log.info("access token refreshed; valid for %s s",
                         _rounded(self.seconds_until_expiry()))
            else:
                log.info("using the token another qonic-proxy process refreshed; valid for %s s",
                         _rounded(self.seconds_until_expiry()))
            return new.access_token

    def _refresh_with_file_lock(self, current: TokenSet) -> tuple[TokenSet, bool]:
        """Runs in a worker thread: one refresh across every process sharing the cache file.

        Under the lock the file is read again: when a sibling process already rotated the refresh
        token, its result is used instead of spending our (now used) refresh token a second time.
        Returns the tokens and whether a token request was made (False: the sibling's result).
        """
        with self.store.refresh_lock():
            on_disk = self.store.load()
            base = current
            if on_disk is not None and on_disk.obtained_at > current.obtained_at:
                fresh = not self._needs_refresh(on_disk)
                if on_disk.access_token != current.access_token and fresh:
                    return on_disk, False
                base = on_disk
            if not base.refresh_token:
                raise QonicProxyError("the cached token cannot be refreshed; log in again")
            new = refresh_tokens(self.cfg, base.refresh_token)
            self.store.save(new)
            return new, True

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
        if self.login_pending:
            return
        if self._login_cooldown.active:
            return
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
        if self.login_pending and self._login is not None:
            return self._login.authorize_url
        attempt = LoginAttempt(self.cfg)
        await attempt.start()
        self._login = attempt
        self._login_received = False
        self._login_task = asyncio.get_running_loop().create_task(self._finish_login(attempt))
        self.on_change()
        announce = f"login needed: open this URL in a browser: {attempt.authorize_url}"
        if log.isEnabledFor(logging.WARNING):
            log.warning("%s", announce)
        else:  # the URL is always shown, whatever --log-level says: it is how a login starts
            print(f"qonic-proxy: {announce}", file=sys.stderr, flush=True)
        if self.cfg.oauth.open_browser and self.open_browser is not None:
            open_browser_in_background(self.open_browser, attempt.authorize_url)
        return attempt.authorize_url

    async def _finish_login(self, attempt: LoginAttempt) -> None:
        try:
            tokens = await attempt.wait()
            self._login_received = True  # from here on, finishing must not be cancelled
            await asyncio.to_thread(self.store.save, tokens)
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
        self._adopt(tokens)
        log.info("logged in to Qonic; token valid for %s s", _rounded(self.seconds_until_expiry()))

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


def _rounded(value: float | None) -> int | None:
    return None if value is None else int(value)
