"""Send a request again, once, with a fresh token, after Qonic answered 401.

mitmproxy cannot restart a flow from an addon, so the one retry is made here with http.client
(to the exact API origin, TLS verified against the same trust as mitmproxy uses, through the
`[qonic] upstream_proxy` tunnel when one is set) and its answer
becomes the client's response. Only small requests are retried (their body was kept), and only
answers up to MAX_RETRY_RESPONSE are taken; anything larger is left to the client's own retry,
which succeeds because the token was refreshed already.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from mitmproxy import http

from qonic_proxy.config.model import UpstreamProxy
from qonic_proxy.hosts import Origin, bracket
from qonic_proxy.metrics import Metrics
from qonic_proxy.oauth.tunnel import connect, open_connection
from qonic_proxy.proxy.flow_state import flow_state
from qonic_proxy.proxy.inject import answer_without_token
from qonic_proxy.proxy.responses import short_path
from qonic_proxy.tokens.service import TokenService

log = logging.getLogger("qonic_proxy.proxy")

MAX_RETRY_RESPONSE = 16 * 1024 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "content-length"}


@dataclass
class RetryAnswer:
    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]  # as mitmproxy's Headers takes them (latin-1, lossless)
    body: bytes


def resend(*, host: str, port: int, context: ssl.SSLContext | None, method: str, target: str,
           headers: list[tuple[str, str]], body: bytes | None, timeout: float = 60,
           via: UpstreamProxy | None = None) -> RetryAnswer | None:
    """Blocking (run it in a thread). None when the answer is too large to hold."""
    connection = open_connection(host, port, tls=context, via=via, timeout=timeout)
    try:
        connect(connection, via, f"{bracket(host)}:{port}")
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                connection.putheader(name, value)
        if body:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_RETRY_RESPONSE:
            return None
        data = response.read(MAX_RETRY_RESPONSE + 1)
        if len(data) > MAX_RETRY_RESPONSE:
            return None
        kept = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()
                if k.lower() not in HOP_BY_HOP]
        return RetryAnswer(response.status, response.reason, kept, data)
    finally:
        connection.close()


async def after_unauthorized(flow: http.HTTPFlow, *, tokens: TokenService, api_origin: Origin,
                             context: ssl.SSLContext, metrics: Metrics) -> None:
    """Qonic said 401 to a token we sent: refresh once, then replay once if we can."""
    state = flow_state(flow)
    if not state.token or state.retried:
        return
    state.retried = True
    fresh = await tokens.refresh(state.token, force=True)
    if fresh is None and (tokens.tokens is None or tokens.unavailable() is not None):
        # the grant is gone, or the token endpoint is down: say so, as every following
        # request will
        flow.response, _ = answer_without_token(tokens)
        return
    request = flow.request
    replayable = request.raw_content is not None and not request.stream
    if fresh is None or not replayable:
        metrics.rejected.inc("unauthorized_passed_through")
        return
    headers = [(k, v) for k, v in request.headers.items(multi=True)  # type: ignore[no-untyped-call]
               if k.lower() != "authorization"]
    headers.append(("Authorization", f"Bearer {fresh}"))
    if not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("Host", api_origin.authority))
    answer = await asyncio.to_thread(
        resend, host=api_origin.host, port=api_origin.port,
        context=context if api_origin.scheme == "https" else None,  # http: a loopback api_url
        method=request.method, target=request.path, headers=headers, body=request.raw_content,
        via=tokens.cfg.qonic.upstream_proxy)
    if answer is None:
        log.info("the retried answer is too large to hold; the client gets the 401 and "
                 "its own retry will use the refreshed token")
        return
    flow.response = http.Response.make(answer.status, answer.body, answer.headers)
    flow.response.reason = answer.reason
    state.replayed = True
    log.info("retried %s %s once with a refreshed token: %d", request.method,
             short_path(request), answer.status)
