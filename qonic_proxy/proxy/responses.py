"""The answers qonic-proxy gives itself, without going upstream, and how they are delivered."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from qonic_proxy.metrics import Metrics
from qonic_proxy.proxy.client_key import KEY_HEADER
from qonic_proxy.proxy.flow_state import flow_state

log = logging.getLogger("qonic_proxy.proxy")

LOCAL_BODY_LIMIT = 1024 * 1024  # bodies up to this size are read and dropped before a local answer


@dataclass(frozen=True)
class Refusal:
    """A request we will not serve: the status and the JSON body's `error` and `message`."""

    status: int
    error: str
    message: str
    close: bool = False  # the request was malformed: end the connection after the answer

    def response(self) -> http.Response:
        return json_response(self.status, {"error": self.error, "message": self.message},
                             {"Connection": "close"} if self.close else None)


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
                  ) -> http.Response:
    """A local answer: JSON, never cached, never sniffed, no CORS grant."""
    return http.Response.make(
        status,
        json.dumps(body, indent=2).encode() + b"\n",
        {
            "Content-Type": "application/json",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            **(headers or {}),
        },
    )


def login_required(what_to_do: str) -> http.Response:
    return json_response(401, {
        "error": "login_required",
        "message": "qonic-proxy has no valid Qonic token. " + what_to_do,
    })


def token_endpoint_unavailable(headline: str, retry_in: int) -> http.Response:
    """503 while Qonic's token endpoint fails for a transient reason: the login is kept."""
    return json_response(503, {
        "error": "token_endpoint_unavailable",
        "message": f"{headline}; qonic-proxy keeps the login and retries in {retry_in} s.",
        "retry_after": retry_in,
    }, {"Retry-After": str(retry_in)})


def internal_error() -> http.Response:
    return json_response(500, {
        "error": "internal_error",
        "message": "qonic-proxy hit an internal error; see its log.",
    })


def key_required(status: int) -> http.Response:
    """401 (reverse listener) or 407 (forward listener), saying where the key goes."""
    challenge = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    where = ("Proxy-Authorization (e.g. HTTPS_PROXY=http://qonic:KEY@host:port)" if status == 407
             else f"the {KEY_HEADER} header or Basic auth (curl -u qonic:KEY)")
    return json_response(status, {
        "error": "client_key_required",
        "message": f"This qonic-proxy requires its client key; send it in {where}. The key is "
                   "in the file named by [proxy] client_key_file.",
    }, {challenge: 'Basic realm="qonic-proxy"'})


def peer_refused(message: str) -> Refusal:
    """403 for an account [access] does not admit, or a read-only account's write."""
    return Refusal(403, "peer_not_allowed", message)


def read_only_refused(message: str) -> Refusal:
    return Refusal(403, "read_only", message)


def short_path(request: http.Request, limit: int = 200) -> str:
    """The path without its query (queries can carry secrets), cut for a log line."""
    return request.path.split("?", 1)[0][:limit]


def answer_locally(flow: http.HTTPFlow, response: http.Response, metrics: Metrics,
                   reason: str | None = None) -> None:
    """Answer without going upstream.

    mitmproxy cannot answer a request whose body is already being streamed, so a large
    body is refused by closing the connection (the reason is logged and counted). A client
    that sent `Expect: 100-continue` has sent no body yet: it gets the answer at once, before
    any `100 Continue`, whatever the body's size (see mitm_patches).
    """
    flow_state(flow).local = True
    if reason:
        metrics.rejected.inc(reason)
    if expects_continue(flow.request):
        flow.request.stream = False
        flow.response = response
        return
    if flow.request.stream or declared_body_size(flow.request) > LOCAL_BODY_LIMIT:
        log.warning("closing the connection instead of answering (%s): the request body "
                    "is too large to read and drop", reason or "local answer")
        flow.kill()  # type: ignore[no-untyped-call]
        return
    flow.response = response


def refuse(flow: http.HTTPFlow, refusal: Refusal, metrics: Metrics) -> None:
    log.warning("refused %s %s: %s", flow.request.method, short_path(flow.request),
                refusal.error)
    answer_locally(flow, refusal.response(), metrics, reason=refusal.error)


def expects_continue(request: http.Request) -> bool:
    """The client waits for `100 Continue` before it sends the body."""
    return str(request.headers.get("expect", "")).strip().lower() == "100-continue"


def declared_body_size(request: http.Request) -> int:
    if "transfer-encoding" in request.headers:
        return LOCAL_BODY_LIMIT + 1  # unknown length: treat as large
    try:
        return int(request.headers.get("content-length", "0"))
    except ValueError:
        return LOCAL_BODY_LIMIT + 1
