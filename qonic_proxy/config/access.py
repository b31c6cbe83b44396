"""The [access] section: which local accounts may use the proxy, which may only read, and where
the audit log goes. Account names are resolved to uids once, here, so a typo is an error at start
and the proxy compares numbers per connection."""

from __future__ import annotations

import pwd
from typing import Any

from qonic_proxy.access.rules import Rule, RuleError, RuleSet
from qonic_proxy.config.fields import Section, shown, toml_type
from qonic_proxy.config.model import AccessSettings

RULES_EXAMPLE = 'write it as [access.rules] reporter = ["GET /v1/**"]'

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


def rule_sets(sec: Section) -> tuple[tuple[int, RuleSet], ...]:
    """[access.rules]: account (name or uid as the key) -> non-empty array of "METHOD /path"."""
    if not sec.has("rules"):
        return ()
    table = sec.table["rules"]
    if not isinstance(table, dict):
        raise sec.error("rules", f"expected a table, got {toml_type(table)}", RULES_EXAMPLE)
    found: dict[int, RuleSet] = {}
    for name, value in table.items():
        key = f"rules.{shown(name, quote=False)}"
        uid = _account(sec, key, int(name) if name.isdigit() else name)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise sec.error(key, f"expected a non-empty array of \"METHOD /path\" strings, got "
                            f"{toml_type(value)}", RULES_EXAMPLE)
        try:
            rules = tuple(Rule.parse(text) for text in value)
        except RuleError as err:
            raise sec.error(key, str(err), "write each rule as \"METHOD /path\", e.g. "
                            "\"POST /v1/projects/*/models/*/products/query\"") from None
        if uid in found:
            raise sec.error(key, f"the account also has the rule set {found[uid].name!r}",
                            "give each account one rule set")
        found[uid] = RuleSet(str(name), rules)
    return tuple(found.items())


def access_settings(sec: Section) -> AccessSettings:
    audit_log = sec.path("audit_log")
    if audit_log is not None and audit_log.is_dir():
        raise sec.error("audit_log", f"{shown(audit_log, quote=False)} is a directory",
                        "name a file, e.g. /var/log/qonic-proxy/audit.jsonl")
    read_only = accounts(sec, "read_only")
    rules = rule_sets(sec)
    for uid, rule_set in rules:
        if uid in read_only:
            raise sec.error(f"rules.{shown(rule_set.name, quote=False)}",
                            "the account is also listed in read_only",
                            "remove it from read_only: its rules already say what it may send "
                            '(e.g. "GET /v1/**")')
    return AccessSettings(users=accounts(sec, "users"), read_only=read_only,
                          audit_log=audit_log, rules=rules)
