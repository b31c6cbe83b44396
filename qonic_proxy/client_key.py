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
import hmac
import logging
import os
import secrets
from pathlib import Path

from qonic_proxy.errors import ConfigError

log = logging.getLogger("qonic_proxy.client_key")

KEY_HEADER = "X-Qonic-Proxy-Key"


def load_or_create_key(path: Path) -> str:
    """Read the key file; create it (0600, in a 0700 folder, never readable by others) if absent."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise ConfigError(f"cannot create [proxy] client_key_file {path} ({err.strerror}); "
                              "create it yourself with a random key, mode 0600") from None
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        log.warning("generated a new client key in %s; clients must present it", path)
        return key
    except OSError as err:
        raise ConfigError(f"cannot read [proxy] client_key_file {path} ({err.strerror}); fix its "
                          "permissions or path") from None
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"[proxy] client_key_file {path} is readable by other users; run "
                          f"`chmod 600 {path}`")
    if len(key) < 16:
        raise ConfigError(f"[proxy] client_key_file {path} holds a key shorter than 16 "
                          "characters; delete the file and qonic-proxy will generate one")
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
    """Constant-time comparison, so the key cannot be guessed byte by byte from timings."""
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
