"""Browser-attack defences: Host allowed (DNS rebinding), cross-site marks, and no CORS grant."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from qonic_proxy.hosts import canonical_host, parse_host_header
from qonic_proxy.proxy.flow_state import flow_state
from qonic_proxy.proxy.listeners import ListenerInfo
from qonic_proxy.proxy.responses import Refusal

# Sec-Fetch-Site values a browser sends only for requests a person or our own page started
SAME_ORIGIN_FETCH = ("none", "same-origin")
CORS_PREFIX = "access-control-"  # response headers that would grant a web page access


@dataclass
class Guard:
    """Browser-attack defences for everything that reaches a listener as a local request."""

    allowed_hosts: frozenset[str]
    listeners: ListenerInfo
    extra_origins: frozenset[str] = field(default_factory=frozenset)

    def host_allowed(self, host_header: str | None) -> bool:
        """A well-formed Host header (see hosts.parse_host_header) naming an allowed host."""
        parsed = parse_host_header(host_header) if host_header else None
        return parsed is not None and parsed[0] in self.allowed_hosts

    def name_allowed(self, host: str) -> bool:
        """A bare host name or address (a request target's host) that is allowed."""
        canonical = canonical_host(host[:-1] if host.endswith(".") else host)
        return canonical is not None and canonical in self.allowed_hosts

    def cross_site_reason(self, headers: http.Headers) -> str | None:
        """Why a browser would call this request cross-site, or None when it is not."""
        fetch_site: str | None = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site.strip().lower() not in SAME_ORIGIN_FETCH:
            return "Sec-Fetch-Site: " + fetch_site[:40]
        origin: str | None = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin):
            return "Origin: " + origin[:100]
        return None

    def refusal(self, request: http.Request, addressed_to_us: bool) -> Refusal | None:
        """The 403 for a rebound Host (requests addressed to us) or a cross-site request."""
        if addressed_to_us and not self.host_allowed(request.host_header):
            return Refusal(403, "host_not_allowed",
                           f"Host header {request.host_header!r} is not in [proxy] "
                           "allowed_hosts; use http://127.0.0.1 or add the name there.")
        reason = self.cross_site_reason(request.headers)
        if reason is not None:
            return Refusal(403, "cross_site",
                           f"Cross-site browser request refused ({reason}); qonic-proxy only "
                           "serves local programs, not web pages.")
        return None

    def _origin_allowed(self, origin: str) -> bool:
        if origin in self.extra_origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme != "http" or not parts.hostname:
            return False
        try:
            port = parts.port
        except ValueError:
            return False
        return parts.hostname.lower() in self.allowed_hosts and port in self.listeners.ports


def strip_cors(flow: http.HTTPFlow) -> None:
    """No CORS grant on answers that went through with the user's token (or reverse mode).

    Whatever policy the API has for its own web app, a page must never be allowed to read an
    answer that our token earned.
    """
    response = flow.response
    if response is None:
        return
    if flow_state(flow).token or isinstance(flow.client_conn.proxy_mode, ReverseMode):
        for name in {n for n in response.headers if n.lower().startswith(CORS_PREFIX)}:
            del response.headers[name]
