"""Every mitmproxy internal we patch, in one place, for the versions we know (KNOWN_VERSIONS).

1. mitmproxy writes its own error answers (502 upstream down, TLS failure, bad request) as small
   HTML pages from one module-level function of its HTTP/1 layer, with no hook to change them.
   Our clients are scripts, so we replace that function with one that writes the same status and
   message as JSON.
2. mitmproxy buffers a request head until the blank line, without any size limit (its source
   says "FIXME: protect against header size DoS"): one client sending endless header bytes
   would grow the daemon's memory without bound. We wrap the head reader so that a head longer
   than MAX_REQUEST_HEAD (complete or not) gets 431 and the connection is closed. Before that
   reader even runs, mitmproxy's layer decision buffers a plain-HTTP head until its Host header
   is complete; `refuse_undecided_flood` (called from our addon's `next_layer` hook) bounds that.
3. The same wrapper marks origin-form requests on the forward listener (see
   `is_non_proxy_request`), because mitmproxy erases the difference before any hook runs.
4. `tcp_only_reverse_listener`: no UDP (HTTP/3) server beside the reverse listener.
5. `drop_legacy_log_bridge`: no deprecated `add_log` event for every log record.
6. `_answer_before_continue`: a local answer to `Expect: 100-continue` goes out at once, with no
   `100 Continue` and without reading the body (mitmproxy sends the 100 after the hook anyway).

`install()` applies 1-4 and 6 and checks `mitmproxy.version.VERSION`: on a version not listed in
KNOWN_VERSIONS it logs one warning line and goes on. The end-to-end tests ("upstream down",
"untrusted upstream certificate", "oversized request headers") cover the patches on both
supported mitmproxy versions.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Generator
from typing import Any

from mitmproxy import http, version
from mitmproxy import log as mitmproxy_log
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events, layer, mode_specs
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode, HttpStream, _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import RequestHeaders
from mitmproxy.proxy.layers.http._hooks import HttpRequestHeadersHook

from qonic_proxy.proxy.responses import expects_continue

log = logging.getLogger("qonic_proxy.proxy")

KNOWN_VERSIONS = ("11.0.", "12.")  # mitmproxy releases these patches were checked against
MAX_REQUEST_HEAD = 64 * 1024  # request line + headers; browsers and curl send a few KiB

_WHAT_TO_DO = {
    400: "send a well-formed HTTP/1.1 request: one `Name: value` header per line, printable "
         "characters only.",
    502: "qonic-proxy could not reach the Qonic API; check the network and [qonic] api_url "
         "(and [qonic] ca_file if the certificate is not trusted), then retry.",
    504: "the Qonic API did not answer in time; retry later.",
}


def make_json_error_response(status_code: int, message: str = "") -> bytes:
    if " from client, refusing" in message:  # validate_inbound_headers: not the user's option
        message = message.removeprefix("Received ").split(" from client, refusing", 1)[0]
    body = {
        "error": "upstream_error" if status_code in (502, 504) else "proxy_error",
        "status": status_code,
        "message": message[:500],
        "what_to_do": _WHAT_TO_DO.get(status_code, "check the request and retry."),
    }
    response = http.Response.make(
        status_code,
        json.dumps(body).encode() + b"\n",
        http.Headers(
            Server=version.MITMPROXY,
            Connection="close",
            Content_Type="application/json",
            Cache_Control="no-store",
        ),
    )
    assembled: bytes = http1.assemble_response(response)  # type: ignore[no-untyped-call]
    return assembled


_original_read_headers = _http1.Http1Server.read_headers
_non_proxy_requests: weakref.WeakSet[http.Request] = weakref.WeakSet()


def is_non_proxy_request(request: http.Request) -> bool:
    """True for an origin-form request (`GET /path`) that reached the forward listener directly.

    mitmproxy takes such a request's destination from its Host header and would relay it, and it
    rewrites every request to origin-form before our addon sees it, so the addon cannot tell this
    from a real proxy request (`GET http://host/path`) on its own. A browser sends exactly this
    when a rebound DNS name points at our forward port.
    """
    return request in _non_proxy_requests


def _outer_http_mode(layer: Any) -> HTTPMode | None:
    for parent in reversed(layer.context.layers):
        if isinstance(parent, HttpLayer):
            return parent.mode
    return None


def _bounded_read_headers(self: Any, event: events.Event) -> Generator[Any, Any, None]:
    """mitmproxy's head reader, plus a size bound and the origin-form mark described above.

    After a chunk arrives the original either takes a complete head out of the buffer (and moves
    on to the body) or leaves everything in it; what is left is an unfinished head. A complete
    head longer than the limit is refused before its request goes anywhere (what it took out of
    the buffer is its exact size); an unfinished one as soon as the buffer holds more.
    """
    buffered = len(self.buf)
    inner = _original_read_headers(self, event)  # type: ignore[arg-type]
    reply: Any = None
    first = True
    while True:
        try:
            command = inner.send(reply)
        except StopIteration:
            break
        if isinstance(command, ReceiveHttp) and isinstance(command.event, RequestHeaders):
            if first and buffered - len(self.buf) > MAX_REQUEST_HEAD:
                inner.close()
                yield from _refuse_oversized_head(self)
                return
            if (not command.event.request.authority
                    and _outer_http_mode(self) is HTTPMode.regular):
                _non_proxy_requests.add(command.event.request)
        first = False
        reply = yield command
    if (
        isinstance(event, events.DataReceived)
        and getattr(self.state, "__func__", None) is _bounded_read_headers
        and len(self.buf) > MAX_REQUEST_HEAD
    ):
        yield from _refuse_oversized_head(self)


def _refuse_oversized_head(server: Any) -> Generator[Any, Any, None]:
    """431 JSON, then close the connection and forget what was buffered."""
    message = f"request headers larger than {MAX_REQUEST_HEAD // 1024} KiB"
    yield commands.Log(f"closing a client connection: {message}")
    yield commands.SendData(server.conn, make_json_error_response(431, message))
    yield commands.CloseConnection(server.conn)
    server.buf = _http1.ReceiveBuffer()  # type: ignore[attr-defined]
    server.state = server.done


_original_wait_for_request_headers = HttpStream.state_wait_for_request_headers


def _answer_before_continue(self: Any, event: RequestHeaders) -> Generator[Any, Any, None]:
    """mitmproxy's request-head step, except for a local answer to `Expect: 100-continue`.

    mitmproxy sends `100 Continue` right after the `requestheaders` hook, even when the hook
    answered (a refusal), and then reads the whole body before it sends the answer. When our
    hook answered such a request, the answer goes out at once instead, with no 100, and the
    connection closes, so no body is ever read.
    """
    inner = _original_wait_for_request_headers(self, event)
    reply: Any = None
    while True:
        try:
            command = inner.send(reply)
        except StopIteration:
            return
        reply = yield command
        if isinstance(command, HttpRequestHeadersHook) and _answered_before_body(self, event):
            inner.close()
            self.flow.response.headers["Connection"] = "close"
            self.client_state = self.state_done  # so that the answer ends the stream
            yield from self.send_response()
            self.client_state = self.state_errored  # whatever the client still sends is dropped
            yield commands.CloseConnection(self.context.client)
            return


def _answered_before_body(stream: Any, event: RequestHeaders) -> bool:
    flow = stream.flow
    return (flow.response is not None and flow.error is None and not event.end_stream
            and expects_continue(flow.request))


class _RefuseOversizedHead(layer.Layer):
    """Stands in for the next layer when a client sends more than a head's worth of bytes before
    mitmproxy could even decide what protocol it speaks: answer 431 once, then close."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._answered = False

    def _handle_event(self, event: events.Event) -> Generator[Any, Any, None]:
        if self._answered:
            return
        self._answered = True
        message = f"request headers larger than {MAX_REQUEST_HEAD // 1024} KiB"
        yield commands.Log(f"closing a client connection: {message}")
        yield commands.SendData(self.context.client, make_json_error_response(431, message))
        yield commands.CloseConnection(self.context.client)


def refuse_undecided_flood(nextlayer: layer.NextLayer) -> None:
    """For the `next_layer` hook, after mitmproxy's own NextLayer addon has had its turn.

    On a plain-HTTP listener mitmproxy waits for the complete Host header before it picks a layer
    (allow_hosts is matched against it), buffering everything until then: a head without an end
    would grow without bound there, before the HTTP/1 reader and its limit are ever reached.
    """
    undecided: bytes = nextlayer.data_client()  # type: ignore[no-untyped-call]
    if nextlayer.layer is None and len(undecided) > MAX_REQUEST_HEAD:
        nextlayer.layer = _RefuseOversizedHead(nextlayer.context)


def tcp_only_reverse_listener() -> None:
    """Make mitmproxy's `reverse:https://...` listener TCP only (idempotent).

    mitmproxy also binds UDP on that port for HTTP/3, served by Rust threads of mitmproxy_rs.
    We never advertise HTTP/3, and those threads outlive the event loop: at interpreter exit
    they could still call into Python, and about one stop in five ended in a segfault (exit
    -11 instead of 0, which systemd counts as a failure). No UDP server, no Rust threads.
    """
    if getattr(mode_specs.ReverseMode, "_qonic_tcp_only", False):
        return
    original = mode_specs.ReverseMode.__post_init__

    def post_init(self: mode_specs.ReverseMode) -> None:
        original(self)
        if self.scheme == "https" and self.transport_protocol == "both":
            object.__setattr__(self, "transport_protocol", "tcp")

    mode_specs.ReverseMode.__post_init__ = post_init  # type: ignore[method-assign]
    mode_specs.ReverseMode._qonic_tcp_only = True  # type: ignore[attr-defined]


def drop_legacy_log_bridge() -> None:
    """Remove the root-logger handler mitmproxy installs to turn every log record into a
    deprecated `add_log` event sent to each addon: nothing uses it, and it cost ~67 µs per
    request (our access-log line included). Measured with bench/addon_cost.py. Call it after
    creating the Master (which installs the handler)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, mitmproxy_log.LegacyLogEvents):
            root.removeHandler(handler)


_version_checked = False


def check_version(running: str = version.VERSION) -> bool:
    """True for a mitmproxy version these patches know; otherwise warn, once per process."""
    global _version_checked
    if running.startswith(KNOWN_VERSIONS):
        return True
    if not _version_checked:
        _version_checked = True
        log.warning("mitmproxy %s is not a version qonic-proxy was tested with (%s); if "
                    "requests fail, install one of those", running,
                    ", ".join(v + "x" for v in KNOWN_VERSIONS))
    return False


def install() -> None:
    """Idempotent: point mitmproxy's HTTP/1 error writer and head reader at ours, make the
    reverse listener TCP only, and warn (once) on an unknown mitmproxy version."""
    check_version()
    _http1.make_error_response = make_json_error_response
    _http1.Http1Server.read_headers = _bounded_read_headers  # type: ignore[method-assign]
    HttpStream.state_wait_for_request_headers = _answer_before_continue  # type: ignore[method-assign]
    tcp_only_reverse_listener()
