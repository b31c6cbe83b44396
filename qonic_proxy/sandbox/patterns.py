"""The bytes the sandbox serves for downloads, and their SHA-256 without holding them.

Why: tests and benchmarks check multi-GiB transfers end to end; a formula for byte i (i % 251,
a prime, so pieces never line up with buffer sizes) lets both sides compute the content.
"""

from __future__ import annotations

import hashlib

PIECE = 64 * 1024  # the size the sandbox reads and writes bodies in

_PERIOD = 251
_BASE = bytes(range(_PERIOD))
# Long enough that any 64 KiB piece, at any phase, is one slice of it (no per-piece building).
_PIECE_BUF = _BASE * ((PIECE + _PERIOD) // _PERIOD + 1)
_HASH_BLOCK = _BASE * 4096  # whole periods, so consecutive blocks continue the pattern


def pattern_bytes(offset: int, length: int) -> bytes:
    """The download content: byte i of a file is i % 251 (a prime, so pieces never line up)."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must not be negative")
    start = offset % _PERIOD
    if length <= PIECE:
        return _PIECE_BUF[start : start + length]
    return (_BASE * ((start + length) // _PERIOD + 1))[start : start + length]


def pattern_sha256(size: int) -> str:
    """SHA-256 hex of the first `size` pattern bytes, computed without holding them in memory."""
    digest = hashlib.sha256()
    full, rest = divmod(size, len(_HASH_BLOCK))
    for _ in range(full):
        digest.update(_HASH_BLOCK)
    digest.update(_HASH_BLOCK[:rest])
    return digest.hexdigest()
