"""Local token work for the one-shot verbs (`login`, `status`, `token`), outside the daemon.

They share the daemon's cache file and its refresh lock, so a script calling `qonic-proxy token`
while the daemon runs never spends the same refresh token twice. Talking to the daemon itself
is `daemon_client`'s concern.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from qonic_proxy.cli.daemon_client import (
    ForeignListener,
    daemon_health,
    daemon_login_url,
    key_header,
    request,
)
from qonic_proxy.config.model import Config
from qonic_proxy.errors import LoginError, QonicProxyError
from qonic_proxy.logs import settle as settle_logging
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.store import CacheWriteError, TokenStore, cache_key
from qonic_proxy.tokens.timing import refresh_due_at

LOGIN_POLL = 0.25  # seconds between looks at the daemon while it waits for a login
PASTE_PROMPT = "Paste the address the browser ended on, then press Enter:"


def store_for(cfg: Config) -> TokenStore:
    return TokenStore(cfg.token.cache_file, cache_key(cfg))


def _announce(url: str) -> None:
    print(f"Open this URL in a browser to log in to Qonic:\n\n  {url}\n", file=sys.stderr,
          flush=True)


def _tell(sentence: str) -> None:
    print(f"qonic-proxy: {sentence}", file=sys.stderr, flush=True)


def _read_pasted_line() -> str:
    if sys.stdin.isatty():
        print(PASTE_PROMPT, file=sys.stderr, flush=True)
    return sys.stdin.readline()


def login_now(cfg: Config, *, open_browser: Callable[[str], object] | None,
              paste: bool = False) -> TokenSet | None:
    """Browser login; the new token is written to the cache the daemon watches.

    When the running daemon is itself waiting for a login it holds the callback port, so we
    join its login instead of failing on a busy port: same URL, and we wait for its success.
    With `paste`, a running daemon's own login takes the pasted address (it serves at once);
    None then when the daemon's cache is not ours to read (root pasting for a DynamicUser).
    """
    health = daemon_health(cfg)
    if paste and health is not None:
        return paste_into_daemon(cfg)
    if health is not None and health.get("login_in_progress"):
        return join_daemon_login(cfg, open_browser=open_browser)
    import asyncio  # the login itself: asyncio, the callback server, the OAuth client

    from qonic_proxy.oauth.login import login

    settle_logging()
    tokens = asyncio.run(login(cfg, open_browser=open_browser, announce=_announce,
                               paste=(_read_pasted_line, _tell) if paste else None))
    store_for(cfg).save(tokens)
    return tokens


def post_pasted(cfg: Config, address: str) -> tuple[int, str]:
    """Hand one pasted address to the daemon's /-/login/paste: its status and sentence."""
    from qonic_proxy.oauth.paste import ADDRESS_HEADER, PASTE_HEADER, PASTE_PATH

    body = json.dumps({"address": address.strip()}).encode()
    headers = {**key_header(cfg), PASTE_HEADER: "1", "Content-Type": "application/json",
               ADDRESS_HEADER: address.strip()}  # the daemon answers before reading a body
    try:
        response = request(cfg, "POST", PASTE_PATH, body=body, headers=headers,
                           timeout=cfg.oauth.login_timeout + 30)  # a checked listener
        answer = json.loads(response.body or b"{}")
    except ForeignListener:
        raise
    except (OSError, ValueError) as err:
        raise QonicProxyError(f"cannot reach the running qonic-proxy ({err}); "
                              "is it still running?") from None
    return response.status, str(answer.get("message") if isinstance(answer, dict) else "")


def paste_into_daemon(cfg: Config) -> TokenSet | None:
    """Finish the running daemon's own login with pasted addresses (or its callback)."""
    _announce(daemon_login_url(cfg))
    print("(the running qonic-proxy is waiting for this login; paste the address here)",
          file=sys.stderr, flush=True)
    import queue
    import threading

    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in iter(_read_pasted_line, ""):
            lines.put(line)

    threading.Thread(target=read, name="qonic-proxy-paste", daemon=True).start()
    deadline = time.monotonic() + cfg.oauth.login_timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=LOGIN_POLL)
        except queue.Empty:
            health = daemon_health(cfg)  # the daemon's own callback may have won
            if health is not None and not health.get("login_in_progress"):
                return _daemon_outcome(cfg, health)
            continue
        if not line.strip():
            continue
        status, sentence = post_pasted(cfg, line)
        if status in (200, 409):  # logged in, or no login pending any more (the callback won?)
            health = daemon_health(cfg)
            if status == 200 and health is not None and health.get("logged_in"):
                try:
                    return store_for(cfg).load()
                except QonicProxyError:
                    return None  # e.g. root, and the cache belongs to the service's user
            return _daemon_outcome(cfg, health)
        _tell(sentence or f"the running qonic-proxy refused the address ({status})")
        if status != 400:
            raise LoginError(sentence or "the login failed; see the qonic-proxy log")
    raise LoginError(f"no login completed within {cfg.oauth.login_timeout:g} s; "
                     "run `qonic-proxy login --paste` to try again")


def _daemon_outcome(cfg: Config, health: dict[str, Any] | None) -> TokenSet:
    """The daemon's login is over: the saved tokens, or why it did not complete."""
    if health is None:
        raise QonicProxyError("the running qonic-proxy stopped while waiting for the login; "
                              "run `qonic-proxy login` again")
    tokens = store_for(cfg).load()  # the daemon may have been logged in already, so
    if health.get("logged_in") and tokens is not None:  # "logged_in" alone proves nothing
        return tokens
    raise LoginError(str(health.get("last_login_error")
                         or "the running qonic-proxy did not complete the login; "
                            "see its log, then run `qonic-proxy login` again"))


def join_daemon_login(cfg: Config, *, open_browser: Callable[[str], object] | None) -> TokenSet:
    """Show the daemon's authorize URL (from /-/login) and wait for it to report success."""
    url = daemon_login_url(cfg)
    _announce(url)
    print("(the running qonic-proxy is waiting for this login; it will store the token)",
          file=sys.stderr, flush=True)
    if open_browser is not None:
        from qonic_proxy.oauth.login import open_browser_in_background


        open_browser_in_background(open_browser, url)
    deadline = time.monotonic() + cfg.oauth.login_timeout
    while time.monotonic() < deadline:
        health = daemon_health(cfg)
        if health is None or not health.get("login_in_progress"):
            return _daemon_outcome(cfg, health)
        time.sleep(LOGIN_POLL)
    raise LoginError(f"no login completed within {cfg.oauth.login_timeout:g} s; "
                     "run `qonic-proxy login` to try again")


def _is_fresh(tokens: TokenSet, margin: float) -> bool:
    """Same rule as the daemon's, so the verb and the daemon agree on when a refresh is due."""
    due = refresh_due_at(tokens, margin)
    return due is None or due > time.time()


def _not_refreshing(store: TokenStore, err: CacheWriteError) -> str:
    return (f"cannot write the token cache {store.path} ({err.reason}); not refreshing, because "
            "the new refresh token could not be kept; free space or fix the folder's permissions")


def _daemon_holds_newer(cfg: Config, store: TokenStore) -> None:
    """CacheWriteError when the running daemon holds newer tokens than the file (unsaved).

    The file's refresh token is spent then: using it would look like a replay to Qonic.
    """
    health = daemon_health(cfg)
    cache = health.get("cache") if health else None
    if isinstance(cache, dict) and cache.get("saved") is False:
        raise CacheWriteError("the running qonic-proxy could not save its newest tokens",
                              path=store.path, reason=str(cache.get("error") or "unknown"))


def current_access_token(cfg: Config) -> str:
    """The cached access token, refreshed first (under the shared lock) when it is due.

    The space of the new cache file is reserved before the refresh token is spent: a one-shot
    verb cannot hold new tokens anywhere else, so when the reservation fails it refuses to
    refresh (and still prints a token that has not expired yet, with the warning).
    """
    store = store_for(cfg)
    tokens = store.load()
    if tokens is None:
        raise QonicProxyError(f"not logged in (no token in {store.path}); run `qonic-proxy login`")
    if _is_fresh(tokens, cfg.token.refresh_margin):
        return tokens.access_token
    if not tokens.refresh_token:
        raise QonicProxyError("the cached token has expired and cannot be refreshed; "
                              "run `qonic-proxy login`")
    with store.refresh_lock():
        latest = store.load() or tokens
        if _is_fresh(latest, cfg.token.refresh_margin):
            return latest.access_token  # another process refreshed while we waited
        if not latest.refresh_token:
            raise QonicProxyError("the cached token cannot be refreshed; run `qonic-proxy login`")
        try:
            _daemon_holds_newer(cfg, store)
            reservation = store.reserve()
        except CacheWriteError as err:
            if latest.expires_at is None or latest.expires_at > time.time():
                print(f"qonic-proxy: {_not_refreshing(store, err)}", file=sys.stderr, flush=True)
                return latest.access_token
            raise QonicProxyError(_not_refreshing(store, err)) from None
        from qonic_proxy.oauth.client import refresh_tokens  # ssl, only to refresh

        try:
            new = refresh_tokens(cfg, latest.refresh_token)
            store.save(new, reservation)
        finally:
            reservation.abandon()
        return new.access_token


def status_report(cfg: Config) -> dict[str, Any]:
    """What `status` shows: the cached token's state and the running daemon, if any."""
    store = store_for(cfg)
    tokens = store.load()
    usable = tokens is not None and (tokens.expires_at is None or tokens.expires_at > time.time())
    health = daemon_health(cfg)
    report: dict[str, Any] = {
        "logged_in": usable,
        "cache_file": str(store.path),
        "scopes": list(tokens.scopes) if tokens else [],
        "expires_at": tokens.expires_at if tokens else None,
        "expires_in": (
            int(tokens.expires_at - time.time()) if tokens and tokens.expires_at else None
        ),
        "refresh_token": bool(tokens and tokens.refresh_token),
        "daemon": None,
    }
    report["cache"] = {"path": str(store.path), "saved": True, "error": None}
    if health is not None and "listeners" in health:
        report["daemon"] = {key: health.get(key) for key in ("status", "listeners", "pid")}
        if isinstance(health.get("cache"), dict):
            report["cache"] = health["cache"]  # the daemon knows whether its newest are saved
    if not usable:
        report["action"] = "run `qonic-proxy login`"
    return report
