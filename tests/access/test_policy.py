"""Tests for qonic_proxy.access.policy: who is admitted, who may only read, log throttling."""

from __future__ import annotations

import os

import pytest

from qonic_proxy.access import policy as policy_module
from qonic_proxy.access.policy import (
    LOG_EVERY,
    Peer,
    Policy,
    account_name,
    connection_allowed,
    read_only_message,
    refused_message,
)


def test_by_default_only_the_owner_and_root() -> None:
    policy = Policy(owner=1000)
    assert policy.allows(Peer(1000)) and policy.allows(Peer(0))
    assert not policy.allows(Peer(1001))
    assert policy.allows(Peer(None))  # unidentified: the client key decides, not the policy


def test_listed_and_read_only_accounts() -> None:
    policy = Policy(users=frozenset({1001}), read_only=frozenset({1002}), owner=1000)
    assert policy.allows(Peer(1001)) and policy.allows(Peer(1002))
    assert all(policy.may(Peer(1002), m) for m in ("GET", "head", "OPTIONS"))
    assert not any(policy.may(Peer(1002), m) for m in ("POST", "PUT", "DELETE", "PATCH"))
    assert policy.may(Peer(1001), "DELETE") and policy.may(Peer(None), "POST")


def test_refusals_are_logged_once_a_minute_per_account() -> None:
    policy = Policy()
    assert policy.should_log(Peer(5), now=100.0)
    assert not policy.should_log(Peer(5), now=100.0 + LOG_EVERY - 1)
    assert policy.should_log(Peer(6), now=101.0)
    assert policy.should_log(Peer(5), now=100.0 + LOG_EVERY)


def test_messages_name_the_account_and_the_setting() -> None:
    text = refused_message(Peer(0), "/etc/qonic-proxy/config.toml")
    assert "root (uid 0)" in text and "[access] users" in text and "config.toml" in text
    assert "[access] read_only" in read_only_message(Peer(0), "POST")
    assert account_name(4_000_000_000) == "4000000000"


def test_connection_allowed_without_addresses_is_unidentified() -> None:
    allowed, peer = connection_allowed(None, None)
    assert allowed and peer.uid is None
    allowed, peer = connection_allowed(("127.0.0.1", 1), ("127.0.0.1", 2), (os.geteuid(),))
    assert allowed


def test_an_account_outside_our_user_namespace_needs_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under PrivateUsers= every unmapped account shows as one overflow uid: never ours."""
    monkeypatch.setattr(policy_module, "peer_is_outside", lambda uid: uid == 65534)
    outside = Peer.of(65534)
    assert outside.uid is None and outside.outside
    policy = Policy(users=frozenset({1001}), owner=1000)
    assert not policy.allows(outside)
    assert policy.allows(outside, keyed=True)
    assert policy.allows(Peer(None))  # unidentified (another OS, a peer gone): the key decides
    message = refused_message(outside, "/etc/qonic-proxy/config.toml")
    assert "PrivateUsers=" in message and "client_key_file" in message
    assert "shared-machine.conf" in message
