"""The one way a token request reaches the token endpoint: one POST with `http.client`.

Deliberately small: no redirects (a token endpoint that redirects is misconfigured or hostile,
and re-posting the form would hand the code or refresh token to someone else), no proxy taken
from the environment (http.client never reads HTTP(S)_PROXY), a bounded read, and TLS verified
against the roots `qonic_proxy.trust` decides. With `[qonic] upstream_proxy` the request goes
through that proxy's CONNECT tunnel (`oauth.tunnel`). Blocking; async callers use
asyncio.to_thread.
"""

from __future__ import annotations

import http.client
import logging
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from qonic_proxy.config.model import UpstreamProxy
from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.hosts import DEFAULT_PORTS, bracket, display_url
from qonic_proxy.oauth.messages import network_error
from qonic_proxy.oauth.tunnel import TunnelError, connect, open_connection
from qonic_proxy.trust import ssl_context, trust_roots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Response:
    """Status, content type, Retry-After and at most `limit + 1` bytes of the body."""

    status: int
    content_type: str | None
    body: bytes = field(repr=False)
    retry_after: str | None = None  # the raw header; token_request.parse_retry_after reads it


def _connection(url: str, *, ca_file: Path | None, via: UpstreamProxy | None, timeout: float,
                ) -> tuple[http.client.HTTPConnection, str]:
    """The connection (not yet connected) and the host:port it is for."""
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    try:
        port = parts.port
        usable = scheme in ("http", "https") and bool(host)
    except ValueError:  # a port that is not a number
        port, usable = None, False
    if not usable:
        raise TokenEndpointError(
            f"[qonic] token_url {display_url(url)} is not an http(s) URL; set it to Qonic's "
            "token endpoint",
            error_code="config",
        )
    context = None if scheme == "http" else ssl_context(trust_roots(ca_file))  # ConfigError
    target = f"{bracket(host)}:{port or DEFAULT_PORTS[scheme]}"
    return open_connection(host, port, tls=context, via=via, timeout=timeout), target


def post_form(
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    ca_file: Path | None,
    timeout: float,
    limit: int,
    via: UpstreamProxy | None = None,
) -> Response:
    """POST `body` to `url`; TokenEndpointError (one sentence) for a redirect or a network error."""
    shown = display_url(url)
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn, authority = _connection(url, ca_file=ca_file, via=via, timeout=timeout)
    try:
        connect(conn, via, authority)
        conn.request("POST", target, body=body, headers=headers)
        answer = conn.getresponse()
        status = answer.status
        if 300 <= status < 400:
            raise TokenEndpointError(
                f"the token endpoint at {shown} answered with a redirect (HTTP {status}), "
                "which token endpoints must not do; set [qonic] token_url to the final URL",
                error_code="redirect",
                status=status,
            )
        content_type = answer.getheader("Content-Type")
        retry_after = answer.getheader("Retry-After")
        try:
            data = answer.read(limit + 1)
        except (OSError, http.client.HTTPException):
            if status < 400:
                raise
            data = b""  # an error status says enough without its body
    except TunnelError as exc:
        log.debug("token request to %s failed: %s", shown, exc)
        raise TokenEndpointError(str(exc), error_code="network") from None
    except (OSError, http.client.HTTPException) as exc:
        error = network_error(exc, shown, timeout)
        log.debug("token request to %s failed: %s", shown, error)
        raise error from None
    finally:
        conn.close()
    return Response(status, content_type, data, retry_after)
