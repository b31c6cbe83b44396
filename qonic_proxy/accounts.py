"""Local accounts by uid: the one lookup of a login name, and how a sentence names an account."""

from __future__ import annotations

import functools
import pwd


@functools.lru_cache(maxsize=1024)
def login_name(uid: int) -> str | None:
    """The login name of `uid`, or None when no account has that number."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def account_name(uid: int) -> str:
    """The login name of `uid`, or the number when it has none."""
    return login_name(uid) or str(uid)


def described(uid: int) -> str:
    """`name (uid N)`, or `uid N` for a number no account has."""
    name = login_name(uid)
    return f"{name} (uid {uid})" if name else f"uid {uid}"
