"""The token cache file: where a login survives restarts, shared by the daemon and the CLI verbs.

The file holds a bearer token, so it follows the rules of `qonic_proxy.files`: 0600 in a 0700
folder, replaced atomically, and refused, never silently used, when someone else could read it.
This module adds the format (version, cache key, tokens) and words every failure for the user.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from qonic_proxy.config.model import Config
from qonic_proxy.digest import sha256
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.files import (
    Reservation,
    UnsafeFile,
    ensure_private_dir,
    exclusive_lock,
    fsync_dir,
    read_private_file,
    write_atomic,
)
from qonic_proxy.logs import logger
from qonic_proxy.oauth.tokenset import TokenSet

log = logger(__name__)

FORMAT_VERSION = 1
MAX_CACHE_SIZE = 1024 * 1024  # a token file is a few KiB; do not read a huge file into memory
RESERVED_SIZE = 16 * 1024  # set aside before a refresh: more than a token file ever needs


def cache_key(cfg: Config) -> str:
    """Which login a cache file belongs to: endpoint, client and scopes, hashed.

    Hashed so the file does not tell a reader which client or scopes it is for; a changed config
    then simply looks like a foreign file and a new login replaces it.
    """
    material = json.dumps(
        [cfg.qonic.token_url, cfg.oauth.client_id, sorted(cfg.oauth.scopes)],
        separators=(",", ":"),
    )
    return sha256(material.encode("utf-8")).hexdigest()


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class CacheWriteError(QonicProxyError):
    """The cache could not be written; `reason` is the OS's few words (e.g. "No space left")."""

    def __init__(self, message: str, *, path: Path, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class TokenStore:
    """Load, save and delete the cached tokens for one cache key."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        self.key = key

    def __repr__(self) -> str:
        return f"TokenStore(path={str(self.path)!r})"

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # -- reading -------------------------------------------------------------------------

    def load(self) -> TokenSet | None:
        """The cached tokens, or None when there are none we can use.

        A missing, corrupt or foreign file is not an error (a new login replaces it); a file
        others can read is, because quietly using a leaked token would hide the leak.
        """
        try:
            raw = read_private_file(self.path, limit=MAX_CACHE_SIZE)
        except UnsafeFile as unsafe:
            raise QonicProxyError(self._unsafe_message(unsafe)) from None
        except OSError as exc:
            raise QonicProxyError(
                f"cannot read token cache {self.path} ({_why(exc)}); fix its permissions or "
                "delete it"
            ) from None
        return None if raw is None else self._decode(raw)

    def _unsafe_message(self, unsafe: UnsafeFile) -> str:
        """The sentence for each privacy rule the cache file breaks, with what to do."""
        if unsafe.reason == UnsafeFile.SYMLINK:
            return (
                f"token cache {self.path} is a symbolic link, which is not trusted; delete it "
                "or point [token] cache_file at a regular file"
            )
        if unsafe.reason == UnsafeFile.FOREIGN:
            return (
                f"token cache {self.path} belongs to another user (uid {unsafe.uid}); delete it "
                "or run qonic-proxy as the user who owns it"
            )
        if unsafe.reason == UnsafeFile.LOOSE and unsafe.mode is not None:
            what = "readable" if unsafe.mode & 0o044 else "writable"
            return (
                f"token cache {self.path} is {what} by others (mode {unsafe.mode:04o}); run "
                f"`chmod 600 {self.path}` or delete it"
            )
        return (
            f"token cache {self.path} is not a regular file; delete it or point [token] "
            "cache_file elsewhere"
        )

    def _decode(self, raw: bytes) -> TokenSet | None:
        def ignore(what: str) -> None:
            log.warning("token cache %s %s; a new login will replace it", self.path, what)

        if len(raw) > MAX_CACHE_SIZE:
            ignore("is too large to be a token cache")
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            ignore("is not valid JSON")
            return None
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), dict):
            ignore("does not have the expected shape")
            return None
        if data.get("version") != FORMAT_VERSION:
            ignore("was written in an unknown format version")
            return None
        if data.get("key") != self.key:
            ignore("belongs to another token endpoint, client or scope set")
            return None
        try:
            return TokenSet.from_json(data["tokens"])
        except ValueError as exc:  # the message names a field, never a value
            ignore(f"does not have the expected shape ({exc})")
            return None

    def mtime_ns(self) -> int | None:
        """Modification time, so a daemon can notice that `qonic-proxy login` saved a new token."""
        try:
            return os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None

    # -- writing -------------------------------------------------------------------------

    def _ensure_folder(self) -> Path:
        """Create the folder 0700, or tighten an existing one of ours (not the home folder)."""
        folder = self.path.parent
        try:
            before = stat.S_IMODE(os.stat(folder).st_mode) if folder.is_dir() else None
            if ensure_private_dir(folder):
                log.warning(
                    "tightened the permissions of token cache folder %s from %04o to 0700",
                    folder,
                    before or 0,
                )
        except OSError as exc:
            raise CacheWriteError(
                f"cannot create token cache folder {folder} ({_why(exc)}); check [token] "
                "cache_file and the permissions of its parent folders",
                path=self.path, reason=_why(exc),
            ) from None
        return folder

    def _write_error(self, exc: OSError) -> CacheWriteError:
        return CacheWriteError(
            f"cannot write token cache {self.path} ({_why(exc)}); check [token] cache_file "
            "and the permissions of its folder",
            path=self.path, reason=_why(exc),
        )

    def reserve(self) -> Reservation:
        """Set aside the space of the next save (before spending a refresh token on it).

        CacheWriteError when the folder is full, read-only or not ours to write: the caller
        then knows, before the token request, that its result could not be kept on disk.
        """
        self._ensure_folder()
        try:
            return Reservation(self.path, RESERVED_SIZE)
        except OSError as exc:
            raise self._write_error(exc) from None

    def save(self, tokens: TokenSet, reservation: Reservation | None = None) -> None:
        """Replace the cache atomically; at no moment is a readable or half-written file there.

        With a `reservation` (from `reserve`), the tokens go into the space it holds.
        """
        if reservation is None:
            self._ensure_folder()
        payload = json.dumps(
            {"version": FORMAT_VERSION, "key": self.key, "tokens": tokens.to_json()},
            separators=(",", ":"),
        ).encode("utf-8")
        try:
            if reservation is not None:
                reservation.commit(payload)
            else:
                write_atomic(self.path, payload)
        except OSError as exc:
            raise self._write_error(exc) from None
        log.debug("saved tokens to %s", self.path)

    def delete(self) -> bool:
        """Remove the cache; True when there was one. The lock file stays (others may hold it)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise QonicProxyError(
                f"cannot delete token cache {self.path} ({_why(exc)}); delete it by hand"
            ) from None
        fsync_dir(self.path.parent)
        return True

    # -- cross-process refresh lock ------------------------------------------------------

    @contextlib.contextmanager
    def refresh_lock(self, timeout: float = 30) -> Iterator[None]:
        """Hold an exclusive lock on "<path>.lock" so two processes never refresh at once.

        Refresh tokens may be single-use: two concurrent refreshes would make one of them fail.
        The lock is `flock` (files.exclusive_lock): the kernel releases it when its holder dies,
        so there is never a stale lock to break. Blocking: async callers use asyncio.to_thread.
        Only taking the lock is worded here; errors of the locked work pass through unchanged.
        """
        self._ensure_folder()
        lock_path = self.lock_path
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(exclusive_lock(lock_path, timeout))
            except TimeoutError:
                raise QonicProxyError(
                    f"another qonic-proxy process held the token lock {lock_path} for "
                    f"more than {timeout:g} s; wait for it to finish or stop it"
                ) from None
            except OSError as exc:
                raise QonicProxyError(
                    f"cannot open the token lock file {lock_path} ({_why(exc)}); check the "
                    "permissions of the token cache folder"
                ) from None
            yield
