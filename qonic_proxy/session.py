"""Token work for the one-shot verbs (`login`, `status`, `token`), outside the daemon.

They share the daemon's cache file and its refresh lock, so a script calling `qonic-proxy token`
while the daemon runs never spends the same refresh token twice.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from qonic_proxy.config import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.oauth import TokenSet, login, refresh_tokens
from qonic_proxy.token_store import TokenStore, cache_key


def store_for(cfg: Config) -> TokenStore:
    return TokenStore(cfg.token.cache_file, cache_key(cfg))


def login_now(cfg: Config, *, open_browser: Callable[[str], object] | None) -> TokenSet:
    """Browser login; the new token is written to the cache the daemon watches."""

    def announce(url: str) -> None:
        print(f"Open this URL in a browser to log in to Qonic:\n\n  {url}\n", file=sys.stderr,
              flush=True)

    tokens = asyncio.run(login(cfg, open_browser=open_browser, announce=announce))
    store_for(cfg).save(tokens)
    return tokens


def _is_fresh(tokens: TokenSet, margin: float) -> bool:
    return tokens.expires_at is None or tokens.expires_at - margin > time.time()


def current_access_token(cfg: Config) -> str:
    """The cached access token, refreshed first (under the shared lock) when it is due."""
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
        new = refresh_tokens(cfg, latest.refresh_token)
        store.save(new)
        return new.access_token


def daemon_health(cfg: Config, timeout: float = 1.0) -> dict[str, Any] | None:
    """The running daemon's /-/health, if one answers on the configured reverse port."""
    host = cfg.proxy.listen_host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - we only connect, to loopback
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    if not cfg.proxy.port:
        return None
    url = f"http://{host}:{cfg.proxy.port}/-/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return json.loads(response.read(65536))
    except urllib.error.HTTPError as err:  # 503 = running but waiting for a login
        try:
            return json.loads(err.read(65536))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def status_report(cfg: Config) -> dict[str, Any]:
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
    if health is not None and "listeners" in health:
        report["daemon"] = {key: health.get(key) for key in ("status", "listeners", "pid")}
    if not usable:
        report["action"] = "run `qonic-proxy login`"
    return report
