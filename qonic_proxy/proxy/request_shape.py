"""Request shape: what a request must look like before any part of it may go upstream.

mitmproxy's HTTP/1 reader is lenient where the API's server may not be (checked on 11.0.2 and
12.3.1): a bare CR or a NUL stays inside a header value, a header name may hold spaces or
control characters, an obs-fold continuation line is joined to the previous value with its
CRLF kept (so it leaves as a folded line again), and an absolute-form target
(`GET https://evil.example/x`) on the reverse listener or inside an intercepted tunnel is sent
upstream as it came. A server that splits lines at a bare CR would read `X-A: a\\rHost: evil`
as two headers. So every header name must be an RFC 9110 token, every value free of control
characters other than tab, and every target a path in origin-form; otherwise a 400 JSON with
`Connection: close`, before anything goes upstream. (A bare LF ends a header line for
mitmproxy, which sends the headers on with CRLF, so both sides agree on where lines end.)
"""

from __future__ import annotations

import re

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from qonic_proxy.proxy.listeners import ListenerInfo
from qonic_proxy.proxy.responses import Refusal

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # any control character but tab
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")  # a target has no space or control character


def header_refusal(headers: http.Headers) -> Refusal | None:
    """400 for a header name that is not a token or a value with CR, LF, NUL or obs-fold."""
    for name, value in headers.fields:
        if not _TOKEN.match(name) or _CONTROL.search(value):
            shown = name[:40].decode("latin-1")
            return Refusal(
                400, "bad_header",
                f"The header {shown!r} has a control character (CR, LF or NUL), a name that is "
                "not a token, or a continuation line (obs-fold); send each header on one line "
                "as `Name: value` with printable characters only.", close=True)
    return None


def target_refusal(request: http.Request, listeners: ListenerInfo, *, reverse: bool,
                   ) -> Refusal | None:
    """400 unless the target is origin-form (`/path?query`).

    mitmproxy turns proxy requests on the forward listener into origin-form itself; an
    authority that is still there came to the reverse listener or inside a tunnel.
    """
    if request.authority and reverse:
        forward = (f"its forward listener {listeners.forward_url}" if listeners.forward_url
                   else "a forward listener (set [proxy] forward_port)")
        return Refusal(
            400, "absolute_form",
            "This is qonic-proxy's reverse listener, which takes paths only "
            f"(GET /v1/projects); to use qonic-proxy as a proxy, send proxy requests to {forward}.",
            close=True)
    path: bytes = request.data.path
    if request.authority or not path.startswith(b"/") or _BAD_TARGET.search(path):
        return Refusal(
            400, "bad_target",
            "The request target must be a path that starts with / and has no spaces or "
            "control characters; send the path only (GET /v1/projects).", close=True)
    return None


def refusal(flow: http.HTTPFlow, listeners: ListenerInfo) -> Refusal | None:
    """Why this request is refused for its shape, or None when it may go on."""
    reverse = isinstance(flow.client_conn.proxy_mode, ReverseMode)
    return (header_refusal(flow.request.headers)
            or target_refusal(flow.request, listeners, reverse=reverse))
