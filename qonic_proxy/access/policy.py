"""The [access] rules as a ready value: who may use the proxy, who may only read.

By default only the daemon's own account and root may use it; `[access] users` adds accounts,
and `[access] read_only` accounts may use it too, limited to GET, HEAD and OPTIONS. A peer that
cannot be identified (another OS, a non-loopback address, no matching socket) is not judged
here: the client key stays the guard there, as without access control.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from qonic_proxy.access.peer import peer_is_outside, raw_peer_uid
from qonic_proxy.access.rules import RuleSet
from qonic_proxy.accounts import account_name

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOG_EVERY = 60.0  # seconds: a refused account is logged at most once a minute


@dataclass(frozen=True)
class Peer:
    """The local account on the other end of a connection (uid None: not identified)."""

    uid: int | None
    # uid None because the account lives outside our user namespace (systemd's PrivateUsers=):
    # not ours, so it is refused unless it presents the client key
    outside: bool = False

    @classmethod
    def of(cls, uid: int | None) -> Peer:
        """The peer for a raw socket-table uid (see `peer.raw_peer_uid`)."""
        return cls(None, outside=True) if peer_is_outside(uid) else cls(uid)

    @property
    def name(self) -> str:
        if self.outside:
            return "an account outside this service's user namespace"
        return "unidentified" if self.uid is None else account_name(self.uid)

    def describe(self) -> str:
        return self.name if self.uid is None else f"{self.name} (uid {self.uid})"


@dataclass
class Policy:
    """Allowed and read-only uids, plus the once-a-minute memory of refused accounts."""

    users: frozenset[int] = frozenset()
    read_only: frozenset[int] = frozenset()
    owner: int = field(default_factory=os.geteuid)
    rules: Mapping[int, RuleSet] = field(default_factory=dict)
    _logged: dict[int, float] = field(default_factory=dict, repr=False)

    def allows(self, peer: Peer, *, keyed: bool = False) -> bool:
        """False for an identified account that is not ours, root, or listed, and for an account
        outside our user namespace that did not present a key (`keyed`)."""
        if peer.uid is None:
            return keyed or not peer.outside
        return (peer.uid in (self.owner, 0) or peer.uid in self.users
                or peer.uid in self.read_only or peer.uid in self.rules)

    def may(self, peer: Peer, method: str) -> bool:
        """Whether `peer` may send `method` (read-only accounts: GET, HEAD, OPTIONS)."""
        return peer.uid not in self.read_only or method.upper() in SAFE_METHODS

    def limit(self, peer: Peer, method: str, path: str, *, narrowed: bool = False,
              endpoint: bool = False) -> tuple[str, str] | None:
        """(error, message) when `peer` may not send this request, else None.

        An account with a rule set may send what one of its rules matches; at our own endpoints
        (`endpoint`) it is limited like a read-only account. `narrowed`: the request carries a
        read-only minted key, which limits any account to GET, HEAD and OPTIONS on top.
        """
        rule_set = None if peer.uid is None else self.rules.get(peer.uid)
        if rule_set is not None and not endpoint and not rule_set.allows(method, path):
            return "rule_refused", rule_message(peer, rule_set, method)
        if method.upper() in SAFE_METHODS:
            return None
        if narrowed:
            return "read_only", (f"this request carries a read-only key (exec or env "
                                 f"--read-only): {method[:20]} is refused, only GET, HEAD and "
                                 "OPTIONS are allowed.")
        if rule_set is not None and endpoint or not self.may(peer, method):
            return "read_only", read_only_message(peer, method)
        return None

    def should_log(self, peer: Peer, now: float | None = None) -> bool:
        """True at most once per account per LOG_EVERY seconds."""
        now = time.monotonic() if now is None else now
        key = -1 if peer.uid is None else peer.uid
        last = self._logged.get(key)
        if last is not None and now - last < LOG_EVERY:
            return False
        if len(self._logged) > 4096:
            self._logged.clear()
        self._logged[key] = now
        return True


def refused_message(peer: Peer, config_path: object) -> str:
    where = f" in {config_path}" if config_path else ""
    if peer.outside:
        return ("qonic-proxy serves only its own account and root, and it runs in a private user "
                "namespace (systemd's PrivateUsers=) where every other local account looks the "
                "same: present the client key ([proxy] client_key_file), or, for the system "
                "unit, install systemd/shared-machine.conf and name the account in [access] "
                "users (docs/systemd.md, Shared machines).")
    return (f"qonic-proxy serves only its own account; the local account {peer.describe()} is "
            f"not allowed: add {peer.name!r} to [access] users{where} to let it use the proxy.")


def read_only_message(peer: Peer, method: str) -> str:
    return (f"the local account {peer.describe()} is read-only here ([access] read_only): "
            f"{method[:20]} is refused, only GET, HEAD and OPTIONS are allowed.")


def rule_message(peer: Peer, rule_set: RuleSet, method: str) -> str:
    return (f"the local account {peer.describe()} may only send what its rule set "
            f"{rule_set.name!r} ([access.rules]) allows; this {method[:20]} request matches none "
            f"of its rules: {', '.join(rule.text for rule in rule_set.rules)[:300]}.")


def connection_allowed(sockname: object, peername: object, users: tuple[int, ...] = (),
                       ) -> tuple[bool, Peer]:
    """For a plain socket server (the login callback): may this connection's account use us?

    Read-only accounts may not: finishing a login is not reading.
    """
    uid = None
    if isinstance(sockname, tuple) and isinstance(peername, tuple):
        uid = raw_peer_uid(sockname[:2], peername[:2])
    peer = Peer.of(uid)
    return Policy(users=frozenset(users)).allows(peer), peer
