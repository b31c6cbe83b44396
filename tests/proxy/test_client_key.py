"""The client key file and its comparison."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from qonic_proxy.errors import ConfigError
from qonic_proxy.proxy import client_key


def test_key_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[bytes, bytes]] = []
    real = client_key.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(client_key.hmac, "compare_digest", spy)
    assert client_key.matches("k" * 32, "k" * 32)
    assert not client_key.matches("k" * 32, "k")
    assert not client_key.matches("k" * 32, "\udcff")  # undecodable header bytes: no crash
    assert len(calls) == 3 and all(len(a) == len(b) == 32 for a, b in calls)


@pytest.mark.parametrize("problem", ["loose", "foreign", "short"])
def test_bad_key_files_are_refused(tmp_path: Path, problem: str):
    path = tmp_path / "client.key"
    path.write_text("k" * (8 if problem == "short" else 40))
    path.chmod(0o644 if problem == "loose" else 0o600)
    if problem == "foreign":
        if os.getuid() != 0:
            pytest.skip("needs root to give a file to another user")
        os.chown(path, 4242, 4242)
    with pytest.raises(ConfigError) as err:
        client_key.load_or_create_key(path)
    assert str(path) in str(err.value) and "k" * 8 not in str(err.value)


def test_key_file_is_created_without_a_readable_window(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", spy)
    old = os.umask(0)
    try:
        key = client_key.load_or_create_key(tmp_path / "new" / "client.key")
    finally:
        os.umask(old)
    created = [(p, f, m) for p, f, m in opened if f & os.O_CREAT]
    assert created and all(f & os.O_EXCL and m == 0o600 for _, f, m in created)
    assert stat.S_IMODE((tmp_path / "new" / "client.key").stat().st_mode) == 0o600
    assert client_key.load_or_create_key(tmp_path / "new" / "client.key") == key
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["client.key"]  # no temp left


