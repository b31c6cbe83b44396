"""Tests for qonic_proxy.config.access: the [access] section."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from qonic_proxy.config.loader import parse_config
from qonic_proxy.errors import ConfigError


def parse(access: dict[str, object]) -> object:
    return parse_config({"oauth": {"client_id": "x"}, "access": access}, "f.toml",
                        config_dir=Path("/etc/qp")).access  # type: ignore[attr-defined]


def test_defaults_are_empty() -> None:
    cfg = parse_config({"oauth": {"client_id": "x"}}, "f.toml")
    assert cfg.access.users == () and cfg.access.read_only == () and cfg.access.audit_log is None


def test_names_and_uids_resolve() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    access = parse({"users": [me, 4242, me], "read_only": [7], "audit_log": "audit.jsonl"})
    assert access.users == (os.geteuid(), 4242)  # type: ignore[attr-defined]
    assert access.read_only == (7,)  # type: ignore[attr-defined]
    assert access.audit_log == Path("/etc/qp/audit.jsonl")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("access", "words"), [
    ({"users": "alice"}, "[access] users: expected an array"),
    ({"users": [True]}, "[access] users: expected account names or uids, got a boolean"),
    ({"read_only": ["no-such-account-qp"]}, "there is no local account named"),
    ({"users": [-1]}, "-1 is not a valid uid"),
    ({"users": [2**32]}, "is not a valid uid"),
    ({"audit_log": 5}, "[access] audit_log: expected a string"),
    ({"audit_log": "/"}, "is a directory"),
    ({"user": ["x"]}, "unknown key (did you mean users?)"),
    ({"rules": ["GET /v1/**"]}, "[access] rules: expected a table, got an array"),
    ({"rules": {"root": "GET /v1/**"}}, "[access] rules.root: expected a non-empty array"),
    ({"rules": {"root": []}}, "[access] rules.root: expected a non-empty array"),
    ({"rules": {"root": ["GET /v1", 3]}}, "[access] rules.root: expected a non-empty array"),
    ({"rules": {"root": ["GET /v1/x*"]}}, "[access] rules.root: the segment 'x*'"),
    ({"rules": {"root": ["get /v1"]}}, "is not an upper-case HTTP method"),
    ({"rules": {"no-such-account-qp": ["GET /v1"]}},
     "[access] rules.no-such-account-qp: there is no local account named"),
    ({"rules": {"root": ["GET /v1"], "0": ["GET /v2"]}}, "also has the rule set 'root'"),
    ({"rules": {"root": ["GET /v1"]}, "read_only": [0]}, "also listed in read_only"),
])
def test_errors_name_file_and_key(access: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(access)
    message = str(caught.value)
    assert message.startswith("f.toml: [access] ") and words in message
    assert message.count(";") == 1


def test_rules_resolve_accounts_and_parse() -> None:
    access = parse({"rules": {"root": ["GET /v1/**"], "4242": ["* /v1/echo"]}})
    rules = dict(access.rules)  # type: ignore[attr-defined]
    assert set(rules) == {0, 4242}
    assert rules[0].name == "root" and rules[0].allows("GET", "/v1/projects")
    assert rules[4242].allows("DELETE", "/v1/echo") and not rules[4242].allows("GET", "/v1/x")
