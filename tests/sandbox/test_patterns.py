"""The download pattern: byte i is i % 251, at any offset, and its streamed SHA-256."""

from __future__ import annotations

import hashlib

import pytest

from qonic_proxy.sandbox.patterns import pattern_bytes, pattern_sha256


def test_pattern_bytes_is_i_mod_251_at_any_offset() -> None:
    assert pattern_bytes(0, 600) == bytes(i % 251 for i in range(600))
    for offset, length in [(1, 10), (250, 3), (65535, 70000), (10**9 + 7, 300), (5, 0)]:
        assert pattern_bytes(offset, length) == bytes(
            (offset + i) % 251 for i in range(length)
        )
    whole = b"".join(pattern_bytes(o, min(65536, 300_000 - o)) for o in range(0, 300_000, 65536))
    assert hashlib.sha256(whole).hexdigest() == pattern_sha256(300_000)
    assert pattern_sha256(0) == hashlib.sha256(b"").hexdigest()
    with pytest.raises(ValueError):
        pattern_bytes(-1, 1)
