"""The audit log: one JSON line per request that reached the token path or that access control
refused. The file is 0600 (its folder 0700 when we create it), each line goes out in one
O_APPEND write so lines never interleave, and `reopen` (SIGHUP) follows a logrotate rename.

Only the fields below are ever written: never a token, code, key, query string or body.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from pathlib import Path

from qonic_proxy.errors import ConfigError
from qonic_proxy.files import PRIVATE_FILE_MODE, UnsafeFile, ensure_private_dir

log = logging.getLogger("qonic_proxy.audit")
OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


class AuditLogError(ConfigError):
    """The audit log cannot be opened (one sentence, with the fix)."""


@dataclass(frozen=True)
class AuditRecord:
    """What one line says; `path` must already be without its query string."""

    account: str | None
    uid: int | None
    listener: str
    method: str
    path: str
    status: int
    bytes_up: int | None
    bytes_down: int | None
    duration_ms: float
    reason: str | None = None
    key_id: str | None = None

    def line(self, now: float | None = None) -> bytes:
        """The JSON line, encoded by hand: it is written for every audited request, and this is
        about three times cheaper than json.dumps of a dict (bench/access_cost.py)."""
        moment = time.time() if now is None else now
        second = int(moment)
        stamp = f"{_utc_second(second)}.{int((moment - second) * 1000):03d}Z"
        return (
            f'{{"time":"{stamp}","account":{_text(self.account)},"uid":{_number(self.uid)},'
            f'"key_id":{_text(self.key_id)},"listener":{_text(self.listener)},'
            f'"method":{_text(self.method[:20])},'
            f'"path":{_text(self.path.split("?", 1)[0][:300])},"status":{int(self.status)},'
            f'"bytes_up":{_number(self.bytes_up)},"bytes_down":{_number(self.bytes_down)},'
            f'"duration_ms":{round(float(self.duration_ms), 1)!r},'
            f'"reason":{_text(self.reason)}}}\n').encode("ascii")


def _text(value: str | None) -> str:
    """A JSON string (ASCII only, every control character escaped), or null."""
    return "null" if value is None else encode_basestring_ascii(value)


def _number(value: int | None) -> str:
    return "null" if value is None else str(int(value))


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS` of one UTC second: lines of the same second share it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class AuditLog:
    """An open audit log file; `write` never raises (a failing disk must not stop the proxy)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._failed = False
        self.reopen()

    def reopen(self) -> None:
        """(Re)open the file at `path`: after a rename, a new file is created, 0600."""
        try:
            if not self.path.parent.exists():  # an existing folder (/var/log) is left as it is
                ensure_private_dir(self.path.parent)
            fd = os.open(self.path, OPEN_FLAGS, PRIVATE_FILE_MODE)
        except (OSError, UnsafeFile) as err:
            why = getattr(err, "strerror", None) or err
            raise AuditLogError(
                f"cannot open the audit log {self.path} ({why}); fix [access] audit_log or let "
                "this account write there") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            raise AuditLogError(
                f"the audit log {self.path} is not a regular file of this account; remove it or "
                "choose another [access] audit_log")
        if stat.S_IMODE(info.st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        old, self._fd, self._failed = self._fd, fd, False
        if old >= 0:
            os.close(old)

    def write(self, record: AuditRecord) -> None:
        data = record.line()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(0, "short write")
        except OSError as err:
            if not self._failed:
                log.error("cannot write the audit log %s (%s); audit lines are lost until it "
                          "can be written or the daemon gets SIGHUP", self.path,
                          err.strerror or err)
            self._failed = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
