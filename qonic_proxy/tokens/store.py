"""The token cache file: where a login survives restarts, shared by the daemon and the CLI verbs.

The file holds a bearer token, so it is 0600 in a 0700 folder, written atomically (temp file
created 0600 with O_EXCL, fsync, rename, fsync of the folder) and refused, never silently used,
when someone else could read it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.oauth.tokenset import TokenSet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_CACHE_SIZE = 1024 * 1024  # a token file is a few KiB; do not read a huge file into memory


def cache_key(cfg: Config) -> str:
    """Which login a cache file belongs to: endpoint, client and scopes, hashed.

    Hashed so the file does not tell a reader which client or scopes it is for; a changed config
    then simply looks like a foreign file and a new login replaces it.
    """
    material = json.dumps(
        [cfg.qonic.token_url, cfg.oauth.client_id, sorted(cfg.oauth.scopes)],
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


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
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise QonicProxyError(
                    f"token cache {self.path} is a symbolic link, which is not trusted; delete it "
                    "or point [token] cache_file at a regular file"
                ) from None
            raise QonicProxyError(
                f"cannot read token cache {self.path} ({_why(exc)}); fix its permissions or "
                "delete it"
            ) from None
        try:
            info = os.fstat(fd)
            self._check_private(info)
            with os.fdopen(fd, "rb", closefd=False) as handle:
                raw = handle.read(MAX_CACHE_SIZE + 1)
        except OSError as exc:
            raise QonicProxyError(
                f"cannot read token cache {self.path} ({_why(exc)}); fix its permissions or "
                "delete it"
            ) from None
        finally:
            os.close(fd)
        return self._decode(raw)

    def _check_private(self, info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise QonicProxyError(
                f"token cache {self.path} is not a regular file; delete it or point [token] "
                "cache_file elsewhere"
            )
        if info.st_uid != os.getuid():
            raise QonicProxyError(
                f"token cache {self.path} belongs to another user (uid {info.st_uid}); delete it "
                "or run qonic-proxy as the user who owns it"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            what = "readable" if mode & 0o044 else "writable"
            raise QonicProxyError(
                f"token cache {self.path} is {what} by others (mode {mode:04o}); run "
                f"`chmod 600 {self.path}` or delete it"
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
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.stat(folder)
            mode = stat.S_IMODE(info.st_mode)
            if info.st_uid == os.getuid():
                if mode & 0o077 and folder.resolve() != Path.home().resolve():
                    os.chmod(folder, 0o700)
                    log.warning(
                        "tightened the permissions of token cache folder %s from %04o to 0700",
                        folder,
                        mode,
                    )
            elif mode & 0o022 and not mode & stat.S_ISVTX:
                raise QonicProxyError(
                    f"token cache folder {folder} belongs to another user and others can write to "
                    "it; point [token] cache_file at a folder of your own"
                )
        except OSError as exc:
            raise QonicProxyError(
                f"cannot create token cache folder {folder} ({_why(exc)}); check [token] "
                "cache_file and the permissions of its parent folders"
            ) from None
        return folder

    def save(self, tokens: TokenSet) -> None:
        """Replace the cache atomically; at no moment is a readable or half-written file there."""
        folder = self._ensure_folder()
        payload = json.dumps(
            {"version": FORMAT_VERSION, "key": self.key, "tokens": tokens.to_json()},
            separators=(",", ":"),
        ).encode("utf-8")
        temp = folder / f".{self.path.name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(
                temp,
                os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            try:
                with os.fdopen(fd, "wb", closefd=False) as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise QonicProxyError(
                f"cannot write token cache {self.path} ({_why(exc)}); check [token] cache_file "
                "and the permissions of its folder"
            ) from None
        self._fsync_folder(folder)
        log.debug("saved tokens to %s", self.path)

    @staticmethod
    def _fsync_folder(folder: Path) -> None:
        """Make the rename itself durable (a crash must not bring the old file back)."""
        try:
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass  # some file systems cannot fsync a directory; the data itself is synced
        finally:
            os.close(dir_fd)

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
        self._fsync_folder(self.path.parent)
        return True

    # -- cross-process refresh lock ------------------------------------------------------

    @contextlib.contextmanager
    def refresh_lock(self, timeout: float = 30) -> Iterator[None]:
        """Hold an exclusive lock on "<path>.lock" so two processes never refresh at once.

        Refresh tokens may be single-use: two concurrent refreshes would make one of them fail.
        The lock is `fcntl.flock`, which the kernel releases when the holder's file is closed or
        its process dies, so there is never a stale lock to detect or break. flock has no timeout,
        so we poll a non-blocking attempt. Blocking: async callers use asyncio.to_thread.
        """
        self._ensure_folder()
        lock_path = self.lock_path
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise QonicProxyError(
                f"cannot open the token lock file {lock_path} ({_why(exc)}); check the "
                "permissions of the token cache folder"
            ) from None
        try:
            deadline = time.monotonic() + timeout
            delay = 0.01
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise QonicProxyError(
                            f"another qonic-proxy process held the token lock {lock_path} for "
                            f"more than {timeout:g} s; wait for it to finish or stop it"
                        ) from None
                    time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    delay = min(delay * 2, 0.2)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
