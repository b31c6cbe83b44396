"""The running daemon's runtime file: who runs for a config (pid, listeners), found by the CLI.

`qonic-proxy run` holds an `flock` on `daemon-<id>.lock` beside the token cache from before
mitmproxy starts until it stops (the kernel drops it if the process dies, so there is nothing
stale to clean), and writes `daemon-<id>.json` (0600, atomic) once its listeners are bound. A
second `run` for the same config finds the lock taken and says who holds it; `status`, `login`
and `exec` read the JSON to reach a daemon whose config says `port = 0`. `<id>` is derived from
the config file's absolute path and its [proxy] listen_host, port and forward_port, so each
config has its own pair and another config's daemon is never taken for ours. Nothing secret is
in either file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from typing import Any

from qonic_proxy.config.model import Config
from qonic_proxy.digest import sha256
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.files import (
    UnsafeFile,
    ensure_private_dir,
    exclusive_lock,
    read_private_file,
    write_atomic,
)
from qonic_proxy.logs import logger
from qonic_proxy.records import as_dict, record

MAX_RECORD = 4096
log = logger("qonic_proxy.runtime")


@record
class DaemonRecord:
    """What a running daemon wrote about itself."""

    pid: int
    config: str | None
    api_url: str
    reverse_url: str
    reverse_port: int
    forward_url: str | None
    forward_port: int
    started_at: float

    def to_json(self) -> bytes:
        return json.dumps(as_dict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DaemonRecord | None:
        try:
            raw: Any = json.loads(data)
            record = cls(**raw)
        except (ValueError, TypeError):
            return None
        ints = (record.pid, record.reverse_port, record.forward_port)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in ints):
            return None
        return record


def _identity(cfg: Config) -> str:
    """The config file and the listeners it asks for: two daemons of one file on other ports
    (a test, a migration) are two configs; the same file and ports are one."""
    source = str(cfg.path.absolute()) if cfg.path is not None else "(no config file)"
    proxy = cfg.proxy
    listeners = f"{proxy.listen_host} {proxy.port} {proxy.forward_port}"
    return sha256(f"{source}\n{listeners}".encode()).hexdigest()[:16]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, though not ours to signal
    return True


def _process_uid(pid: int) -> int | None:
    """The account a live process runs as (the owner of /proc/PID), None when it is gone."""
    if pid <= 0:
        return None
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None
    except OSError:  # no /proc here: a live pid is taken as its record file's owner's
        return os.getuid() if _alive(pid) else None


class RuntimeFile:
    """The lock and the record of the daemon running for one config."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        folder = cfg.token.cache_file.parent
        name = f"daemon-{_identity(cfg)}"
        self.lock_path = folder / f"{name}.lock"
        self.path = folder / f"{name}.json"
        self._held = contextlib.ExitStack()

    # ----- the daemon's side ---------------------------------------------------------------
    def claim(self) -> None:
        """Take the config's lock, or raise the one sentence naming the daemon that holds it."""
        try:
            ensure_private_dir(self.lock_path.parent)
            self._held.enter_context(exclusive_lock(self.lock_path, timeout=0))
        except TimeoutError:
            raise QonicProxyError(self._already_running()) from None
        except (OSError, UnsafeFile) as err:
            raise QonicProxyError(
                f"cannot lock {self.lock_path} ({err}); check that folder's owner and "
                "permissions, or set [token] cache_file to a folder of yours") from None
        with contextlib.suppress(OSError):
            self.path.unlink()  # left by a daemon that died: no one holds its lock

    def _already_running(self) -> str:
        record = self.read()
        where = f" (pid {record.pid}, {record.reverse_url})" if record else ""
        config = f" {self.cfg.path}" if self.cfg.path else ""
        return (f"qonic-proxy is already running for this config{config}{where}; use that one, "
                "or stop it before starting another")

    def write(self, record: DaemonRecord) -> None:
        """Publish the record; a failure is no reason to stop serving, only to say so."""
        try:
            write_atomic(self.path, record.to_json())
        except OSError as err:
            log.warning("cannot write %s (%s): `qonic-proxy status` will not find this daemon "
                        "unless [proxy] port is fixed", self.path, err.strerror or err)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._held.close()

    # ----- the CLI's side ------------------------------------------------------------------
    def read(self) -> DaemonRecord | None:
        """The record of a daemon that is still alive, else None (never raises)."""
        try:
            data = read_private_file(self.path, limit=MAX_RECORD)
        except (OSError, UnsafeFile):
            return None
        if data is None or len(data) > MAX_RECORD:
            return None
        record = DaemonRecord.from_json(data)
        return record if record is not None and _alive(record.pid) else None

    def read_owned(self) -> tuple[DaemonRecord, int] | None:
        """The record and the account that runs the daemon, for the CLI's impostor check.

        Our own record, or that of a daemon running as another account (a system service seen
        by root: the runtime file is then the service account's). It is believed only when no
        one but its owner (or root) can have put it there: a regular file, not a link, neither
        it nor its folder writable by group or others, the folder owned by the same account or
        root, and the recorded pid still running as that account. Else None (never raises).
        """
        try:
            folder = os.stat(self.path.parent)
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            data = os.read(fd, MAX_RECORD + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        owner = info.st_uid
        if (not stat.S_ISREG(info.st_mode) or (info.st_mode | folder.st_mode) & 0o022
                or folder.st_uid not in (owner, 0) or len(data) > MAX_RECORD):
            return None
        record = DaemonRecord.from_json(data)
        if record is None or _process_uid(record.pid) != owner:
            return None
        return record, owner


def record_for(cfg: Config, api_url: str, reverse_url: str, reverse_port: int,
               forward_url: str | None, forward_port: int) -> DaemonRecord:
    return DaemonRecord(
        pid=os.getpid(), config=str(cfg.path) if cfg.path else None, api_url=api_url,
        reverse_url=reverse_url, reverse_port=reverse_port, forward_url=forward_url,
        forward_port=forward_port, started_at=time.time(),
    )
