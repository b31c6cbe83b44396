"""SHA-256 for the one-shot verbs, without loading OpenSSL.

`hashlib` loads OpenSSL's libcrypto (through `_hashlib`, 3 ms) to offer its SHA-256. The verbs
hash little (a cache's name, a stat fingerprint, a CA bundle of a few hundred kB), for which
Python's built-in SHA-256 is as good; it is used when the build has it (`_sha2` since 3.12,
`_sha256` before), hashlib's otherwise (a build without the built-in hashes, as some FIPS
builds are). The digests are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


def _builtin() -> Callable[..., Hash]:
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            from hashlib import sha256
    found: Callable[..., Hash] = sha256
    return found


sha256: Callable[..., Hash] = _builtin()
