"""Where the token is decided: is a request addressed to us, to the API origin, or elsewhere?

The decision uses the real connection target (`request.scheme`, `host`, `port`), never the
Host header, SNI or a redirect: only the exact configured API origin earns the token.
"""

from __future__ import annotations

import enum

from mitmproxy import http
from mitmproxy.proxy.mode_specs import RegularMode, ReverseMode

from qonic_proxy.hosts import Origin, normalise_host
from qonic_proxy.proxy.guard import Guard
from qonic_proxy.proxy.listeners import ListenerInfo
from qonic_proxy.proxy.mitm_patches import is_non_proxy_request
from qonic_proxy.proxy.responses import Refusal


class Route(enum.Enum):
    """What happens to a request that passed the guards."""

    ENDPOINT = "endpoint"  # one of our /-/ endpoints
    API = "api"  # the configured API origin: gets the token
    ELSEWHERE = "elsewhere"  # any other destination: passes through untouched, no token


FORWARD_PORT_NOT_A_SERVER = Refusal(
    404, "not_found",
    "This is qonic-proxy's forward-proxy port; send requests through it as a proxy, or call "
    "the reverse port.")


def is_self_request(request: http.Request, guard: Guard, listeners: ListenerInfo) -> bool:
    """A plain request whose destination is one of our own listeners (never proxy to us)."""
    return (
        request.scheme == "http"
        and request.port in {listeners.reverse_port, listeners.forward_port}
        and (guard.name_allowed(request.host) or request.host == listeners.public_host)
    )


def addressed_to_us(flow: http.HTTPFlow, guard: Guard, listeners: ListenerInfo) -> bool:
    """The reverse listener, a request to one of our listeners, or an origin-form request on
    the forward listener (what a rebound DNS name pointing at our port sends)."""
    mode = flow.client_conn.proxy_mode
    return (isinstance(mode, ReverseMode) or is_self_request(flow.request, guard, listeners)
            or (isinstance(mode, RegularMode) and is_non_proxy_request(flow.request)))


def route(flow: http.HTTPFlow, *, addressed: bool, api_origin: Origin) -> Route | Refusal:
    """The destination of a request that passed the guards (or why it is refused)."""
    request = flow.request
    if addressed and request.path.startswith("/-/"):
        return Route.ENDPOINT
    if addressed and isinstance(flow.client_conn.proxy_mode, RegularMode):
        return FORWARD_PORT_NOT_A_SERVER
    target = Origin(request.scheme.lower(), normalise_host(request.host), request.port)
    if target.host == api_origin.host and target.scheme != api_origin.scheme:
        return Refusal(403, "plain_http_refused",
                       f"Refusing to send a Qonic request over {target.scheme}; use "
                       f"{api_origin}.")
    return Route.API if target == api_origin else Route.ELSEWHERE
