"""File-system primitives for files that hold secrets or that others must not swap under us.

One place for the rules every private file follows: folders are 0700 and ours, files are 0600
and ours, a write goes to a fresh O_EXCL temp file with a unique name and is renamed into place
(readers see the old file or the new one, never half of one), and a lock is `flock`, which the
kernel releases when its holder dies. Callers word the errors: the functions here raise
`UnsafeFile` or `OSError` and say which rule failed, never what a file holds. The one exception
is `NotPrivate` (exit 78): an existing folder, or a lock file, that another account owns or can
write is a setup error whose sentence (folder, owner, fix) is the same for every caller.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from qonic_proxy.accounts import described
from qonic_proxy.errors import ConfigError

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
PRIVATE_DIR_MODE = 0o700


class UnsafeFile(Exception):
    """A file or folder breaks a privacy rule; `reason` is one of the constants below."""

    SYMLINK = "a symbolic link"
    NOT_REGULAR = "not a regular file"
    FOREIGN = "owned by another user"
    LOOSE = "readable or writable by others"

    def __init__(self, path: Path, reason: str, *, uid: int | None = None,
                 mode: int | None = None) -> None:
        super().__init__(f"{path} is {reason}")
        self.path = path
        self.reason = reason
        self.uid = uid
        self.mode = mode


class NotPrivate(ConfigError):
    """An existing folder we must keep private, or a lock file, that is not ours alone (exit 78).

    Not an UnsafeFile: no caller rewords it, so every one of them ends in this one sentence.
    """

    def __init__(self, path: Path, *, uid: int, mode: int, what: str = "folder") -> None:
        self.path, self.uid, self.mode = path, uid, mode
        if uid != os.getuid():
            problem = f"is owned by another account, {described(uid)}"
            fix = (f"use a {what} of your own, or have it given to this account "
                   f"({described(os.getuid())})")
        else:
            problem = f"can be written by other accounts (mode {mode:04o})"
            fix = f"run chmod go-w {path}" if what == "lock file" else f"run chmod 700 {path}"
        super().__init__(f"the {what} {path} {problem}, so they could swap the files qonic-proxy "
                         f"keeps there; {fix}")


def check_ours(path: Path, info: os.stat_result, what: str = "folder") -> None:
    """NotPrivate unless `info` (of `path`) is owned by us and not group/other-writable."""
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.getuid() or mode & 0o022:
        raise NotPrivate(path, uid=info.st_uid, mode=mode, what=what)


def ensure_private_dir(folder: Path) -> bool:
    """Create `folder` (and parents) 0700, or tighten an existing one of ours.

    Returns True when an existing folder had to be tightened (the caller may say so). The home
    folder is never tightened. An existing folder that another account owns (root included,
    unless we are root), or that others can write to, is refused with NotPrivate: whoever can
    write there could already have swapped our files, so tightening it now would be too late.
    """
    folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    info = os.stat(folder)
    check_ours(folder, info)
    if stat.S_IMODE(info.st_mode) & 0o077 and folder.resolve() != Path.home().resolve():
        os.chmod(folder, PRIVATE_DIR_MODE)
        return True
    return False


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash must not bring the old file back)."""
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


TEMP_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_temp(path: Path, mode: int) -> tuple[Path, int]:
    """A new file beside `path`: a unique name, created O_EXCL (a planted name is never followed
    or reused), `mode` whatever the umask. Every temp file of ours is made here."""
    temp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(temp, TEMP_FLAGS, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed a public file's mode
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    return temp, fd


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """`data` in a new temp file beside `path` (see open_temp)."""
    temp, fd = open_temp(path, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    os.close(fd)
    return temp


def write_atomic(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace `path` with `data` atomically; it is never briefly readable by others."""
    temp = _write_temp(path, data, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


class Reservation:
    """Space set aside for the next version of `path`: a preallocated O_EXCL temp file beside it.

    Made before work whose result must not be lost (a refresh rotates the refresh token): once
    the space is held, a full disk can no longer stop the result from being written. `commit`
    writes into it and renames it into place; `abandon` gives the space back.
    """

    def __init__(self, path: Path, size: int, *, mode: int = PRIVATE_FILE_MODE) -> None:
        self.path = path
        self.size = size
        self.temp, fd = open_temp(path, mode)
        self._fd: int | None = fd
        try:
            _preallocate(fd, size)
        except BaseException:
            self.abandon()
            raise

    def commit(self, data: bytes) -> None:
        """Write `data` into the reserved file, trim it, sync it and rename it over `path`."""
        if self._fd is None:
            raise ValueError("the reservation was already used")
        fd, self._fd = self._fd, None
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.ftruncate(fd, len(data))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(self.temp, self.path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
            raise
        fsync_dir(self.path.parent)

    def abandon(self) -> None:
        """Give the space back (safe to call twice, and after a commit)."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


def _preallocate(fd: int, size: int) -> None:
    """Make `size` bytes really allocated (ENOSPC now, not at the write that matters)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    zeros = memoryview(bytes(size))  # the file system cannot preallocate: write the space
    while zeros:
        zeros = zeros[os.write(fd, zeros):]
    os.fsync(fd)


def create_exclusive(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> bool:
    """Create `path` holding `data` unless it exists (then False); never half-written.

    The file is written under a temp name and hard-linked into place, so a concurrent creator
    loses cleanly instead of overwriting the winner.
    """
    temp = _write_temp(path, data, mode)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    fsync_dir(path.parent)
    return True


def read_private_file(path: Path, *, limit: int, allow_root_owner: bool = False) -> bytes | None:
    """The bytes of a file that must be ours and 0600 (at most `limit` + 1 bytes are read).

    None when it does not exist. The file is opened without following a symbolic link and
    checked on the open descriptor, so it cannot be swapped between check and read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(path, UnsafeFile.SYMLINK) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(path, UnsafeFile.NOT_REGULAR)
        owners = (os.getuid(), 0) if allow_root_owner else (os.getuid(),)
        if info.st_uid not in owners:
            raise UnsafeFile(path, UnsafeFile.FOREIGN, uid=info.st_uid)
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise UnsafeFile(path, UnsafeFile.LOOSE, mode=mode)
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold `flock(LOCK_EX)` on `path` (created 0600), waiting at most `timeout` seconds.

    flock has no timeout, so a bounded wait polls a non-blocking attempt; TimeoutError when it
    expires. Blocking: async callers use asyncio.to_thread.
    """
    try:
        # read-only is enough for flock, and a lock held open for writing would keep an
        # administrator from remounting the folder read-only
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     PRIVATE_FILE_MODE)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.ENOSPC):
            raise
        # A read-only (or full) file system: an existing lock file still locks, opened
        # read-only. Where none could be created, nobody else could create one either, so every
        # process falls back to the same object: the folder that would hold it.
        target = path if path.exists() else path.parent
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):  # a lock file another account owns is no lock of ours
            check_ours(path, info, "lock file")
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            delay = 0.01
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{path} stayed locked for {timeout:g} s") from None
                    time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                    delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
