"""`[qonic] upstream_proxy` for the connections mitmproxy makes: every one tunnels with CONNECT.

mitmproxy's own upstream mode does this with `server.via` (a `(scheme, address)` pair on the
server connection): when its HTTP layer opens a server connection whose `via` is set, it stacks
its `HttpUpstreamProxy` layer below TLS, which sends `CONNECT host:port` first and fires the
`http_connect_upstream` hook, where mitmproxy's upstream_auth addon adds Proxy-Authorization. We
use the same two pieces for our reverse and forward listeners (same code in mitmproxy 11.0 and
12.x):
- `requestheaders` sets `via` on the flow's server connection before mitmproxy opens it (API
  requests in both modes, and plain-http forward requests to other hosts);
- `next_layer` puts the same tunnel layer under a forward-mode passthrough (a CONNECT to a host
  that is not intercepted), which mitmproxy would otherwise connect directly;
- `http_connect_upstream` adds the credentials to our CONNECT requests only.
The credentials live in this object only; mitmproxy logs the proxy by its address.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import http
from mitmproxy.proxy.layers import tcp, tls
from mitmproxy.proxy.layers.http import _upstream_proxy
from mitmproxy.proxy.tunnel import LayerStack

from qonic_proxy.config.model import UpstreamProxy


class UpstreamProxyAddon:
    """Added to mitmproxy only when `[qonic] upstream_proxy` is set."""

    def __init__(self, via: UpstreamProxy) -> None:
        self._spec = ("http", (via.host, via.port))
        self._auth = via.proxy_authorization()

    def __repr__(self) -> str:
        return f"UpstreamProxyAddon({self._spec[1][0]}:{self._spec[1][1]})"

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        server = flow.server_conn
        if server.via is None and server.timestamp_start is None:
            server.via = self._spec  # type: ignore[assignment]

    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        if self._auth:
            flow.request.headers["Proxy-Authorization"] = self._auth

    def next_layer(self, nextlayer: Any) -> None:
        """A passthrough tunnel (forward mode, a host we do not intercept) goes through it too."""
        layer = nextlayer.layer
        context = nextlayer.context
        if (
            not isinstance(layer, tcp.TCPLayer)
            or context.server.timestamp_start is not None
            or context.server.address is None
            or any(isinstance(parent, tls.ServerTLSLayer) for parent in context.layers)
        ):
            return
        if context.server.via is None:
            context.server.via = self._spec
        stack: LayerStack = _upstream_proxy.HttpUpstreamProxy.make(context, True)
        stack /= layer
        nextlayer.layer = stack[0]
