"""The [access] section: which local accounts may use the proxy, which may only read, and where
the audit log goes. Account names are resolved to uids once, here, so a typo is an error at start
and the proxy compares numbers per connection."""

from __future__ import annotations

import pwd
from typing import Any

from qonic_proxy.config.fields import Section, shown, toml_type
from qonic_proxy.config.model import AccessSettings

MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid"


def _account(sec: Section, key: str, item: Any) -> int:
    if isinstance(item, bool) or not isinstance(item, int | str):
        raise sec.error(key, f"expected account names or uids, got {toml_type(item)}",
                        'write it as ["name", 1234]')
    if isinstance(item, int):
        if not 0 <= item <= MAX_UID:
            raise sec.error(key, f"{item} is not a valid uid", f"use a number from 0 to {MAX_UID}")
        return item
    try:
        return pwd.getpwnam(item).pw_uid
    except (KeyError, ValueError):
        raise sec.error(key, f"there is no local account named {shown(item)}",
                        "list an existing account name (see getent passwd) or its uid") from None


def accounts(sec: Section, key: str) -> tuple[int, ...]:
    if not sec.has(key):
        return ()
    value = sec.table[key]
    if not isinstance(value, list):
        raise sec.error(key, f"expected an array of account names or uids, got {toml_type(value)}",
                        'write it as ["name", 1234]')
    uids: list[int] = []
    for item in value:
        uid = _account(sec, key, item)
        if uid not in uids:
            uids.append(uid)
    return tuple(uids)


def access_settings(sec: Section) -> AccessSettings:
    audit_log = sec.path("audit_log")
    if audit_log is not None and audit_log.is_dir():
        raise sec.error("audit_log", f"{shown(audit_log, quote=False)} is a directory",
                        "name a file, e.g. /var/log/qonic-proxy/audit.jsonl")
    return AccessSettings(users=accounts(sec, "users"), read_only=accounts(sec, "read_only"),
                          audit_log=audit_log)
