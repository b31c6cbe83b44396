"""Keys the daemon mints for `exec` and `env`: valid while one process lives, never the
configured client key.

A minted key is `qpk.ID.SECRET`: ID names it in the audit log and in revocation (it is not a
secret), SECRET is 256 random bits, kept only as its SHA-256. Each key carries the identity of
the account that asked for it (None: an unidentified holder of the configured key) and at most
its rights (`read_only` narrows them to GET, HEAD and OPTIONS). It dies with the process it was
minted for: the daemon holds a pidfd of that process on its event loop (`os.pidfd_open`; where
there is none, the pid is polled every second) and revokes the key the moment the process ends,
whether it exited, was killed (SIGKILL included) or was never there. Explicit revocation
(`DELETE /-/keys/ID`) ends it earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("qonic_proxy.access")

PREFIX = "qpk."
KEYS_PATH = "/-/keys"  # POST mints, DELETE /-/keys/ID revokes (reverse listener)
PID_HEADER = "X-Qonic-Proxy-Pid"  # the process a key lives with
READ_ONLY_HEADER = "X-Qonic-Proxy-Read-Only"  # "1": GET, HEAD and OPTIONS only
MAX_LIVE_KEYS = 1024
POLL_EVERY = 1.0  # seconds, only where pidfd_open is missing


class MintError(Exception):
    """A key cannot be minted: `status` for the HTTP answer, the message says why and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Grant:
    key_id: str
    digest: bytes = field(repr=False)
    uid: int | None  # the account the key was minted for; None: a configured-key holder
    read_only: bool
    pid: int
    revoked: bool = False


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def process_uid(pid: int) -> int | None:
    """The real uid of process `pid` (from /proc), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def watch_process(pid: int, ended: Callable[[], object]) -> Callable[[], None]:
    """Call `ended` (on the running loop) once `pid` has ended; returns the stop function.

    The pidfd pins the process: a pid reused later is never mistaken for it. MintError when no
    such process exists.
    """
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
    except ProcessLookupError:
        raise MintError(400, f"there is no process {pid}; give the pid of the process the key "
                             "is for") from None
    except OSError:  # an old kernel or a sandbox without pidfd: poll instead
        fd = -1
    done: list[bool] = []
    if fd >= 0:
        def stop() -> None:
            if not done:
                done.append(True)
                loop.remove_reader(fd)
                os.close(fd)
        loop.add_reader(fd, ended)
        return stop
    timer: list[asyncio.Handle] = []

    def poll() -> None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            ended()
            return
        except PermissionError:
            pass
        timer[:] = [loop.call_later(POLL_EVERY, poll)]

    def stop_polling() -> None:
        done.append(True)
        for handle in timer:
            handle.cancel()
    timer.append(loop.call_soon(poll))  # after the caller has registered its key
    return stop_polling


class MintedKeys:
    """The live minted keys of one daemon, each tied to a process."""

    def __init__(self, limit: int = MAX_LIVE_KEYS) -> None:
        self.limit = limit
        self._grants: dict[str, Grant] = {}
        self._stoppers: dict[str, Callable[[], None]] = {}

    def __len__(self) -> int:
        return len(self._grants)

    def mint(self, uid: int | None, pid: int, *, read_only: bool) -> tuple[str, Grant]:
        """A new key for account `uid`, valid while `pid` lives; call on the event loop.

        An identified caller (uid not None, not root) may only tie a key to a process of its
        own account, so it cannot make a key outlive its own processes.
        """
        if len(self._grants) >= self.limit:
            raise MintError(503, f"{self.limit} minted keys are live; end some `exec` or `env` "
                                 "sessions, or restart qonic-proxy")
        if pid <= 1:
            raise MintError(400, f"cannot tie a key to process {pid}; give the pid of the "
                                 "process the key is for")
        key_id = secrets.token_hex(6)
        stop = watch_process(pid, lambda: self.revoke(key_id, "its process ended"))
        # None: /proc hides it (systemd's ProtectProc=invisible hides other accounts' processes
        # from the service). Tying the key to such a process can only stretch its life, and the
        # key is only accepted from `uid`'s own connections anyway: allowed.
        owner = process_uid(pid)
        if uid not in (None, 0) and owner is not None and owner != uid:
            stop()
            raise MintError(403, f"process {pid} does not belong to the account asking for the "
                                 "key; a key can only be tied to a process of your own")
        secret = secrets.token_urlsafe(32)
        grant = Grant(key_id, _digest(secret), uid, read_only, pid)
        self._grants[key_id] = grant
        self._stoppers[key_id] = stop
        log.info("minted key %s for %s, process %d%s", key_id,
                 "an unidentified key holder" if uid is None else f"uid {uid}", pid,
                 ", read-only" if read_only else "")
        return f"{PREFIX}{key_id}.{secret}", grant

    def find(self, presented: str) -> Grant | None:
        """The live grant of a presented key, or None (unknown, revoked, malformed)."""
        if not presented.startswith(PREFIX):
            return None
        key_id, _, secret = presented[len(PREFIX):].partition(".")
        grant = self._grants.get(key_id)
        if grant is None or grant.revoked:
            return None
        return grant if hmac.compare_digest(grant.digest, _digest(secret)) else None

    def get(self, key_id: str) -> Grant | None:
        return self._grants.get(key_id)

    def revoke(self, key_id: str, why: str = "revoked") -> bool:
        grant = self._grants.pop(key_id, None)
        if grant is None:
            return False
        grant.revoked = True
        stop = self._stoppers.pop(key_id, None)
        if stop is not None:
            with contextlib.suppress(OSError, ValueError):
                stop()
        log.info("revoked key %s: %s", key_id, why)
        return True

    def close(self) -> None:
        for key_id in list(self._grants):
            self.revoke(key_id, "the daemon stops")
