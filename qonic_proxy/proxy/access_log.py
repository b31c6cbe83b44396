"""The access-log line and the request metrics, once per flow when it ends."""

from __future__ import annotations

import logging
import time

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode

from qonic_proxy.access.audit import AuditRecord
from qonic_proxy.access.policy import Peer
from qonic_proxy.hosts import bracket
from qonic_proxy.metrics import Metrics
from qonic_proxy.proxy.flow_state import flow_state

access_log = logging.getLogger("qonic_proxy.access")
AUDIT_KEY = "qonic_audit"  # flow.metadata: "token" (reached the token path) or a refusal reason


def mark_token_path(flow: http.HTTPFlow) -> None:
    flow.metadata[AUDIT_KEY] = "token"


def mark_refused(flow: http.HTTPFlow, reason: str) -> None:
    flow.metadata[AUDIT_KEY] = reason


def audit_record(flow: http.HTTPFlow, status: int, peer: Peer, *, keyed: bool,
                 key_id: str | None = None) -> AuditRecord | None:
    """The audit line of a flow that reached the token path or was refused by access control
    (None for any other flow); taken once, so a flow is audited once."""
    mark = flow.metadata.pop(AUDIT_KEY, None)
    if mark is None:
        return None
    started = flow_state(flow).started
    response = flow.response
    return AuditRecord(
        account=None if peer.uid is None else peer.name, uid=peer.uid,
        key_id=key_id or ("client_key" if keyed and peer.uid is None else None),
        listener=listener_name(flow), method=flow.request.method,
        path=flow.request.path.split("?", 1)[0], status=status,
        bytes_up=body_size(flow.request),
        bytes_down=body_size(response) if response is not None else 0,
        duration_ms=(time.monotonic() - started) * 1000 if started is not None else 0.0,
        reason=None if mark == "token" else mark)


def listener_name(flow: http.HTTPFlow) -> str:
    return "reverse" if isinstance(flow.client_conn.proxy_mode, ReverseMode) else "forward"


def upstream_answered(flow: http.HTTPFlow, metrics: Metrics) -> None:
    """responseheaders: how long the API took to start answering."""
    sent = flow_state(flow).sent
    if sent is not None and flow.response is not None:
        metrics.upstream_latency.observe(max(0.0, time.monotonic() - sent))


def observe(flow: http.HTTPFlow, status: int, metrics: Metrics) -> bool:
    """Count and log the flow; True the first time (the flow was in flight until now)."""
    state = flow_state(flow)
    started, state.started = state.started, None
    listener = listener_name(flow)
    metrics.requests.inc(listener, f"{status // 100}xx" if status else "error")
    duration_ms = (time.monotonic() - started) * 1000 if started is not None else 0.0
    response = flow.response
    size = body_size(response) if response is not None else 0
    target = loggable_target(flow)
    access_log.info(
        "%s %s %s %d %.1fms %sB%s",
        listener,
        flow.request.method,
        target,
        status,
        duration_ms,
        size if size is not None else "?",
        "" if flow.error is None else f" error={flow.error.msg[:200]!r}",
        extra={"method": flow.request.method, "path": target, "status": status,
               "duration_ms": round(duration_ms, 1), "bytes": size,
               "listener": listener, "token": bool(state.token)},
    )
    return started is not None


def body_size(message: http.Message) -> int | None:
    """The body's size: read, else as declared; None for a streamed body of unknown length."""
    if message.raw_content is not None:
        return len(message.raw_content)
    try:
        return int(message.headers["content-length"])
    except (KeyError, ValueError):
        return None


def loggable_target(flow: http.HTTPFlow) -> str:
    """Destination (forward mode only) and path without the query string (queries can carry
    secrets). The destination is where the request really went, host and port, never the
    client's Host header."""
    path = flow.request.path.split("?", 1)[0][:300]
    if isinstance(flow.client_conn.proxy_mode, ReverseMode):
        return path
    request = flow.request
    return f"{request.scheme}://{bracket(request.host)}:{request.port}{path}"
