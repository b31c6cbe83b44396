"""Tests for qonic_proxy.access.audit: private file, whole lines, reopen after a rename."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from qonic_proxy.access.audit import AuditLog, AuditLogError, AuditRecord
from qonic_proxy.errors import ConfigError


def record(**changes: object) -> AuditRecord:
    base: dict[str, object] = dict(account="alice", uid=1001, listener="reverse", method="GET",
                                   path="/v1/projects?access_token=abc", status=200, bytes_up=0,
                                   bytes_down=42, duration_ms=3.14159)
    base.update(changes)
    return AuditRecord(**base)  # type: ignore[arg-type]


def test_a_line_has_the_fields_and_no_query(tmp_path: Path) -> None:
    line = json.loads(record().line(now=0.5))
    assert line == {"time": "1970-01-01T00:00:00.500Z", "account": "alice", "uid": 1001,
                    "key_id": None, "listener": "reverse", "method": "GET",
                    "path": "/v1/projects", "status": 200, "bytes_up": 0, "bytes_down": 42,
                    "duration_ms": 3.1, "reason": None}


def test_file_is_private_and_lines_append(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    audit = AuditLog(path)
    audit.write(record())
    audit.write(record(status=403, reason="read_only"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [json.loads(x)["status"] for x in path.read_text().splitlines()] == [200, 403]
    audit.close()


def test_loose_existing_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    path.chmod(0o644)
    AuditLog(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reopen_follows_a_rename(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.write(record())
    path.rename(tmp_path / "audit.jsonl.1")
    audit.reopen()
    audit.write(record(status=201))
    assert json.loads(path.read_text())["status"] == 201
    assert (tmp_path / "audit.jsonl.1").read_text().count("\n") == 1
    audit.close()


def test_a_symlink_or_foreign_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep me\n")
    (tmp_path / "audit.jsonl").symlink_to(target)
    with pytest.raises(AuditLogError, match="audit_log") as caught:
        AuditLog(tmp_path / "audit.jsonl")
    assert isinstance(caught.value, ConfigError)
    assert target.read_text() == "keep me\n"


def test_a_failing_write_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    os.close(audit._fd)  # the disk went away
    audit.write(record())
    audit.write(record())
    assert caplog.text.count("cannot write the audit log") == 1
    audit._fd = -1
