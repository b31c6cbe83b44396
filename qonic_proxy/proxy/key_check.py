"""Who may use our listeners: the peer's local account ([access]) and the client key.

The peer is identified once per client connection, in `client_connected`, before any request;
the result lives in a weak dictionary keyed by the connection, like the keyed CONNECT tunnels.

A CONNECT tunnel that presented the key stays keyed for its lifetime: the set of such client
connections is weak, so an entry dies with its connection and nothing is cleaned on disconnect.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

from mitmproxy import connection, http
from mitmproxy.proxy.mode_specs import ReverseMode

from qonic_proxy.access.peer import peer_uid
from qonic_proxy.access.policy import Peer, Policy
from qonic_proxy.proxy import client_key

log = logging.getLogger("qonic_proxy.proxy")


@dataclass(frozen=True)
class Credentials:
    """Where a request may carry the key; both headers are taken out of the request."""

    proxy_authorization: str | None
    key_header: str | None

    @classmethod
    def take(cls, request: http.Request) -> Credentials:
        """Remove the proxy credentials and our key header: they never go upstream."""
        return cls(request.headers.pop("proxy-authorization", None),
                   request.headers.pop(client_key.KEY_HEADER, None))


def proxy_key(proxy_authorization: str | None) -> str | None:
    """The key in a Proxy-Authorization value: Basic (any user, key as password) or Bearer."""
    return (client_key.key_from_basic(proxy_authorization)
            or client_key.key_from_bearer(proxy_authorization))


@dataclass
class KeyCheck:
    """The client key every request (and every CONNECT) must present."""

    key: str
    keyed: weakref.WeakSet[connection.Client] = field(default_factory=weakref.WeakSet)

    def connect(self, flow: http.HTTPFlow) -> bool:
        """A CONNECT: True (and the tunnel is remembered) when it presented the key."""
        if client_key.matches(self.key, proxy_key(flow.request.headers.get("proxy-authorization"))):
            self.keyed.add(flow.client_conn)
            return True
        return False

    def presented(self, flow: http.HTTPFlow, credentials: Credentials) -> bool:
        """Check the key wherever this listener accepts it; a Basic `Authorization` is stripped."""
        request = flow.request
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            basic = client_key.key_from_basic(request.headers.get("authorization"))
            if basic is not None:
                request.headers.pop("authorization")
            return client_key.matches(self.key, credentials.key_header or basic)
        if flow.client_conn in self.keyed:
            return True  # inside a CONNECT tunnel that presented it
        return client_key.matches(self.key, proxy_key(credentials.proxy_authorization))


UNIDENTIFIED = Peer(None)


@dataclass
class PeerCheck:
    """The account behind each client connection, judged by the [access] policy."""

    policy: Policy
    peers: weakref.WeakKeyDictionary[connection.Client, Peer] = field(
        default_factory=weakref.WeakKeyDictionary)

    def connected(self, client: connection.Client) -> None:
        """Identify the peer of a new connection (one socket-table lookup, never per request)."""
        try:
            uid = peer_uid(client.sockname[:2], client.peername[:2])
        except Exception:  # an address we cannot read: treat the peer as unidentified
            log.exception("could not identify the peer of a connection")
            uid = None
        self.peers[client] = UNIDENTIFIED if uid is None else Peer(uid)

    def peer(self, client: connection.Client) -> Peer:
        found = self.peers.get(client)
        if found is None:  # connected before we were loaded (never in practice): look now
            self.connected(client)
            found = self.peers[client]
        return found
