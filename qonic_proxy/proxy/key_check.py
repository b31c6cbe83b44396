"""Who may use our listeners: the peer's local account ([access]) and the client key.

The peer is identified once per client connection, in `client_connected`, before any request;
the result lives in a weak dictionary keyed by the connection, like the keyed CONNECT tunnels.

A CONNECT tunnel that presented a key stays keyed with it for its lifetime (a revoked minted key
stops it): the map of such client connections is weak, so an entry dies with its connection and
nothing is cleaned on disconnect.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

from mitmproxy import connection, http
from mitmproxy.proxy.mode_specs import ReverseMode

from qonic_proxy.access.minted_keys import KEYS_PATH, PREFIX, Grant, MintedKeys
from qonic_proxy.access.peer import raw_peer_uid
from qonic_proxy.access.policy import Peer, Policy
from qonic_proxy.proxy import client_key
from qonic_proxy.proxy.endpoints import Caller

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


CONFIGURED = "client_key"  # the holder of the configured key (its audit key id, too)
Holder = Grant | str  # a minted key's grant, or CONFIGURED
HOLDER_KEY = "qonic_proxy.key_holder"  # flow.metadata: what key this request presented


@dataclass
class KeyCheck:
    """The client key (when configured) and the minted keys: who presented which key.

    Without a configured key nothing is required, but a minted key that is presented must be
    live: a child of an `exec` that has ended is refused, not served as its account.
    """

    key: str | None
    minted: MintedKeys = field(default_factory=MintedKeys)
    keyed: weakref.WeakKeyDictionary[connection.Client, Holder] = field(
        default_factory=weakref.WeakKeyDictionary)

    def holder(self, presented: str | None) -> Holder | None:
        if presented is None:
            return None
        if presented.startswith(PREFIX):
            return self.minted.find(presented)
        if self.key is not None and client_key.matches(self.key, presented):
            return CONFIGURED
        return None

    def _admits(self, presented: str | None, holder: Holder | None) -> bool:
        if holder is not None:
            return True
        return self.key is None and (presented is None or not presented.startswith(PREFIX))

    def connect(self, flow: http.HTTPFlow) -> bool:
        """A CONNECT: True when it may open a tunnel (whose requests then carry its key)."""
        presented = proxy_key(flow.request.headers.get("proxy-authorization"))
        holder = self.holder(presented)
        if holder is not None:
            self.keyed[flow.client_conn] = holder
        return self._admits(presented, holder)

    def presented(self, flow: http.HTTPFlow, credentials: Credentials) -> bool:
        """Check the key wherever this listener accepts it (a Basic `Authorization` that
        carries it is stripped); the holder is remembered on the flow."""
        request = flow.request
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            basic = client_key.key_from_basic(request.headers.get("authorization"))
            if basic is not None and (self.key is not None or basic.startswith(PREFIX)):
                request.headers.pop("authorization")
            presented = credentials.key_header or basic
        elif flow.client_conn in self.keyed:  # inside a CONNECT tunnel that presented one
            tunnel = self.keyed[flow.client_conn]
            flow.metadata[HOLDER_KEY] = tunnel
            return not (isinstance(tunnel, Grant) and tunnel.revoked)
        else:
            presented = proxy_key(credentials.proxy_authorization)
        holder = self.holder(presented)
        if holder is not None:
            flow.metadata[HOLDER_KEY] = holder
        return self._admits(presented, holder)

    def caller(self, flow: http.HTTPFlow, peers: PeerCheck | None) -> Caller:
        """Who asks one of our endpoints: its account and the key it presented."""
        holder = flow.metadata.get(HOLDER_KEY)
        uid = None if peers is None else peers.peer(flow.client_conn).uid
        return Caller(uid, holder == CONFIGURED, holder if isinstance(holder, Grant) else None)

    def held(self, flow: http.HTTPFlow) -> bool:
        """Whether this request (or its CONNECT tunnel) presented a live key of ours."""
        holder = flow.metadata.get(HOLDER_KEY) or self.keyed.get(flow.client_conn)
        return holder is not None and not (isinstance(holder, Grant) and holder.revoked)

    def key_id(self, flow: http.HTTPFlow) -> str | None:
        """The id of the minted key this request carried, for the audit log (never the key)."""
        holder = flow.metadata.get(HOLDER_KEY)
        return holder.key_id if isinstance(holder, Grant) else None


@dataclass
class PeerCheck:
    """The account behind each client connection, judged by the [access] policy."""

    policy: Policy
    peers: weakref.WeakKeyDictionary[connection.Client, Peer] = field(
        default_factory=weakref.WeakKeyDictionary)

    def connected(self, client: connection.Client) -> None:
        """Identify the peer of a new connection (one socket-table lookup, never per request)."""
        try:
            uid = raw_peer_uid(client.sockname[:2], client.peername[:2])
        except Exception:  # an address we cannot read: treat the peer as unidentified
            log.exception("could not identify the peer of a connection")
            uid = None
        self.peers[client] = Peer.of(uid)

    def peer(self, client: connection.Client) -> Peer:
        found = self.peers.get(client)
        if found is None:  # connected before we were loaded (never in practice): look now
            self.connected(client)
            found = self.peers[client]
        return found

    def limit(self, flow: http.HTTPFlow, peer: Peer) -> tuple[str, str] | None:
        """(error, message) when this request is beyond the account's (or its key's) rights."""
        request = flow.request
        holder = flow.metadata.get(HOLDER_KEY)
        path = request.path
        reverse = isinstance(flow.client_conn.proxy_mode, ReverseMode)
        endpoint = reverse and path.startswith("/-/")
        if endpoint and path.split("?", 1)[0].startswith(KEYS_PATH):
            return None  # minting and revoking: the endpoint authorizes (at most your rights)
        if isinstance(holder, Grant) and holder.uid is not None and holder.uid != peer.uid:
            return "key_not_yours", (f"this key (id {holder.key_id}) was minted for another "
                                     f"local account, not {peer.describe()}.")
        narrowed = isinstance(holder, Grant) and holder.read_only
        return self.policy.limit(peer, request.method, path, narrowed=narrowed,
                                 endpoint=endpoint)
