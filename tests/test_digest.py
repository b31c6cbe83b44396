"""digest: the built-in SHA-256 gives hashlib's digests, without loading OpenSSL."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from qonic_proxy.digest import sha256


def test_same_digests_as_hashlib_whole_and_in_pieces() -> None:
    for data in (b"", b"qonic", bytes(range(256)) * 1000):
        assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
        pieces = sha256()
        for at in range(0, len(data), 4093):
            pieces.update(data[at:at + 4093])
        assert pieces.digest() == hashlib.sha256(data).digest()


def test_importing_it_loads_no_openssl() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys, qonic_proxy.digest as d; d.sha256(b'x').hexdigest();"
         "print(sorted({'_hashlib', '_ssl'} & set(sys.modules)))"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=30,
        check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
