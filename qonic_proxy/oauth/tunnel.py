"""Our own outbound connections (token endpoint, 401 replay), direct or through the upstream proxy.

With `[qonic] upstream_proxy` set, http.client connects to the proxy and asks it for a tunnel
(`CONNECT host:port`, with Basic Proxy-Authorization when the URL carries credentials); TLS to the
real host then runs inside the tunnel, verified as always. The proxy's credentials never appear in
a message: the proxy is shown as `http://***@host:port`, and http.client's own tunnel error is
replaced by one sentence that names the key to fix.
"""

from __future__ import annotations

import http.client
import re
import ssl

from qonic_proxy.config.model import UpstreamProxy

AUTH_REFUSED = ("401", "407")
_TUNNEL_FAILED = re.compile(r"Tunnel connection failed: (\d{3})\s*(.*)")


def open_connection(host: str, port: int | None, *, tls: ssl.SSLContext | None,
                    via: UpstreamProxy | None, timeout: float) -> http.client.HTTPConnection:
    """An HTTP(S) connection to host:port (not yet connected), tunnelled through `via` if set."""
    if via is None:
        if tls is None:
            return http.client.HTTPConnection(host, port, timeout=timeout)
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(via.host, via.port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(via.host, via.port, timeout=timeout, context=tls)
    auth = via.proxy_authorization()
    conn.set_tunnel(host, port, headers={"Proxy-Authorization": auth} if auth else None)
    return conn


class TunnelError(OSError):
    """The upstream proxy could not be reached or refused the tunnel; str() is one sentence."""


def connect(conn: http.client.HTTPConnection, via: UpstreamProxy | None, target: str) -> None:
    """Connect now, so that a failure on the way to the proxy becomes a TunnelError naming it.

    A TLS error comes from the real host (through the tunnel) and is raised unchanged.
    """
    try:
        conn.connect()
    except ssl.SSLError:
        raise
    except OSError as exc:
        if via is None:
            raise
        raise TunnelError(proxy_problem(exc, via, target)) from None


def proxy_problem(exc: OSError, via: UpstreamProxy, target: str) -> str:
    """One sentence for a failure between us and the proxy: unreachable, or CONNECT refused."""
    found = _TUNNEL_FAILED.match(str(exc))
    if found is None:
        why = (exc.strerror or str(exc) or type(exc).__name__)[:120].lower()
        return (f"the upstream proxy {via} could not be reached ({why}); check [qonic] "
                "upstream_proxy and that the proxy is running")
    status, reason = found.group(1), found.group(2).strip()[:80]
    # 407 is the standard answer; some proxies (tinyproxy) answer a CONNECT with 401
    fix = ("check the user name and password in [qonic] upstream_proxy" if status in AUTH_REFUSED
           else f"check [qonic] upstream_proxy, the proxy's rules and that {target} is up")
    return (f"the upstream proxy {via} refused the tunnel to {target} "
            f"(HTTP {status} {reason}); {fix}")
