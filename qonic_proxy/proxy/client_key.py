"""The optional client key: a shared secret local programs must present to use the proxy.

It keeps other accounts on the same machine (and, with a non-loopback listen_host, other
machines) from riding the user's Qonic login. Where a client may put it:
- reverse listener: `X-Qonic-Proxy-Key: KEY`, or HTTP Basic with any user name and KEY as the
  password (`curl -u qonic:KEY`, or `http://qonic:KEY@127.0.0.1:8080/v1` as a base URL);
- forward listener: `Proxy-Authorization` Basic (any user, KEY as password; what
  `HTTPS_PROXY=http://qonic:KEY@127.0.0.1:8081` makes clients send) or Bearer KEY.
Whatever carried the key is removed before the request goes upstream.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from pathlib import Path

from qonic_proxy.errors import ConfigError
from qonic_proxy.files import UnsafeFile, create_exclusive, read_private_file

log = logging.getLogger("qonic_proxy.client_key")

KEY_HEADER = "X-Qonic-Proxy-Key"
MIN_KEY_LENGTH = 16
MAX_KEY_FILE = 4096


def load_or_create_key(path: Path) -> str:
    """Read the key file; create it (0600, never readable by others, never half-written) if absent.

    A key file another user owns or could read is refused: whoever can read it can use the
    proxy as us.
    """
    try:
        raw = read_private_file(path, limit=MAX_KEY_FILE, allow_root_owner=True)
    except UnsafeFile as err:
        raise _unsafe(path, err) from None
    except OSError as err:
        raise ConfigError(f"cannot read [proxy] client_key_file {path} ({err.strerror}); fix its "
                          "permissions or path") from None
    if raw is None:
        return _create_key(path)
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        key = ""
    if len(raw) > MAX_KEY_FILE or len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
        raise ConfigError(f"[proxy] client_key_file {path} does not hold a single key of at least "
                          f"{MIN_KEY_LENGTH} characters; delete the file and qonic-proxy will "
                          "generate one")
    return key


def _unsafe(path: Path, err: UnsafeFile) -> ConfigError:
    """The sentence for each privacy rule a key file can break."""
    if err.reason == UnsafeFile.FOREIGN:
        return ConfigError(f"[proxy] client_key_file {path} belongs to another user (uid "
                           f"{err.uid}); use a key file of your own")
    if err.reason == UnsafeFile.LOOSE:
        return ConfigError(f"[proxy] client_key_file {path} is readable by other users; run "
                           f"`chmod 600 {path}`")
    if err.reason == UnsafeFile.NOT_REGULAR:
        return ConfigError(f"[proxy] client_key_file {path} is not a regular file; point it "
                           "at a file holding the key")
    return ConfigError(f"[proxy] client_key_file {path} is {err.reason}, which is not trusted; "
                       "point it at a regular file holding the key")


def _create_key(path: Path) -> str:
    """Write a new key to a private temp file, then link it into place (atomic, no overwrite)."""
    key = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not create_exclusive(path, (key + "\n").encode()):
            return load_or_create_key(path)  # another process created the key meanwhile
    except OSError as err:
        raise ConfigError(f"cannot create [proxy] client_key_file {path} ({err.strerror}); "
                          "create it yourself with a random key, mode 0600") from None
    log.warning("generated a new client key in %s; clients must present it", path)
    return key


def key_from_basic(value: str | None) -> str | None:
    """The password part of `Basic base64(user:password)`, else None."""
    if not value or value[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[1] if ":" in decoded else None


def key_from_bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison, so the key cannot be guessed byte by byte from timings.

    Both sides are hashed first so that not even the length is compared; surrogateescape
    because mitmproxy hands undecodable header bytes over as lone surrogates.
    """
    if presented is None:
        return False
    want = hashlib.sha256(expected.encode("utf-8", "surrogateescape")).digest()
    got = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(want, got)
