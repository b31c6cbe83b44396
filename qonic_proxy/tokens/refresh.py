"""One refresh shared by every process on the cache file: lock, re-read, reserve, request, save.

Blocking (a worker thread runs it). The order is the point: under the cross-process lock the
file is read again (a sibling may have rotated the refresh token already), the space of the
next save is reserved before the refresh token is spent, and the answer goes into that space.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.store import CacheWriteError, TokenStore

log = logging.getLogger("qonic_proxy.tokens")


def refresh_shared(
    cfg: Config,
    store: TokenStore,
    current: TokenSet,
    request: Callable[[Config, str], TokenSet],
    needs_refresh: Callable[[TokenSet], bool],
) -> tuple[TokenSet, bool, CacheWriteError | None]:
    """Refresh `current` (the newest tokens this process holds) once across processes.

    A file newer than `current` wins: used as it is when fresh, else its refresh token is the
    one spent; a file older than `current` never wins (its refresh token may be spent). When
    not even the reservation can be made the refresh still happens (the caller keeps the tokens
    in memory). Returns the tokens, whether a token request was made (False: a sibling's
    result), and the save failure, if any.
    """
    with store.refresh_lock():
        on_disk = store.load()
        base = current
        if on_disk is not None and on_disk.obtained_at > current.obtained_at:
            if on_disk.access_token != current.access_token and not needs_refresh(on_disk):
                return on_disk, False, None
            base = on_disk
        if not base.refresh_token:
            raise QonicProxyError("the cached token cannot be refreshed; log in again")
        try:
            reservation = store.reserve()
        except CacheWriteError as err:
            log.debug("refreshing without reserved space: %s", err)
            reservation = None
        try:
            new = request(cfg, base.refresh_token)
            store.save(new, reservation)
        except CacheWriteError as err:
            return new, True, err
        finally:
            if reservation is not None:
                reservation.abandon()
        return new, True, None
