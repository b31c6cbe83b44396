"""Which TLS connections we intercept: those whose real address is the API's, and no other.

mitmproxy's `allow_hosts` (set to the API's exact `host:port` in assembly) also matches the
TLS ClientHello's SNI and the Host header, so `CONNECT 127.0.0.1:443` with the API's name as
SNI would be intercepted with a certificate from our CA, although SECURITY.md promises that
every other address is tunnelled untouched. The `tls_clienthello` hook runs for every client
TLS handshake, before any certificate is made; there we decide on the connection's address
alone (the CONNECT target, or the reverse listener's target) and turn every other connection
into a raw tunnel, so the client sees the real server's certificate.
"""

from __future__ import annotations

import logging

from mitmproxy.tls import ClientHelloData

from qonic_proxy.hosts import Origin, normalise_host

log = logging.getLogger("qonic_proxy.proxy")


def is_api_address(address: tuple[str, int] | None, api_origin: Origin) -> bool:
    """The connection's real target is the API's host and port (as spelled in api_url)."""
    if address is None:
        return False
    host, port = address[0], address[1]
    return normalise_host(host) == api_origin.host and port == api_origin.port


def decide(data: ClientHelloData, api_origin: Origin) -> None:
    """For the `tls_clienthello` hook: tunnel, untouched, every connection not to the API."""
    if not is_api_address(data.context.server.address, api_origin):
        data.ignore_connection = True
        log.debug("tunnelling a TLS connection untouched: its address is not the API's")
