"""The mitmproxy addon: thin hooks over guard → endpoints → routing → inject → observe.

Each hook hands its work to a module named after it (routing decides who gets the token, inject
adds it, replay retries a 401 once, access_log observes). The addon never touches files or speaks
OAuth itself: the TokenService does that. Every hook catches its own errors and answers
explicitly, because mitmproxy would otherwise log the error and forward the request without
our header.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, http, tls
from mitmproxy.proxy.mode_specs import ReverseMode

from qonic_proxy.access.audit import AuditLog
from qonic_proxy.access.policy import Policy, refused_message
from qonic_proxy.hosts import Origin
from qonic_proxy.metrics import Metrics
from qonic_proxy.proxy import (
    access_log,
    interception,
    mitm_patches,
    replay,
    request_shape,
    routing,
)
from qonic_proxy.proxy.endpoints import Endpoints
from qonic_proxy.proxy.flow_state import flow_state
from qonic_proxy.proxy.guard import Guard, strip_cors
from qonic_proxy.proxy.inject import add_token
from qonic_proxy.proxy.key_check import Credentials, KeyCheck, PeerCheck
from qonic_proxy.proxy.listeners import ListenerInfo
from qonic_proxy.proxy.responses import (
    Refusal,
    answer_locally,
    internal_error,
    key_required,
    peer_refused,
    refuse,
    short_path,
)
from qonic_proxy.tokens.service import TokenService

log = logging.getLogger("qonic_proxy.proxy")

__all__ = ["Guard", "ListenerInfo", "QonicAddon"]


class QonicAddon:
    """Adds the bearer token to requests whose real target is the Qonic API, and nothing else."""

    def __init__(
        self,
        *,
        api_origin: Origin,
        tokens: TokenService,
        metrics: Metrics,
        guard: Guard,
        listeners: ListenerInfo,
        upstream_tls: ssl.SSLContext,
        key: str | None = None,
        status_extra: Callable[[], dict[str, Any]] = dict,
        on_running: Callable[[], None] = lambda: None,
        access: Policy | None = None,
        audit: AuditLog | None = None,
        config_path: object = None,
    ) -> None:
        self.api_origin = api_origin
        self.tokens = tokens
        self.metrics = metrics
        self.guard = guard
        self.listeners = listeners
        self.upstream_tls = upstream_tls
        self.key_check = KeyCheck(key)
        self.endpoints = Endpoints(tokens, metrics, status_extra, self.key_check.minted)
        self.on_running = on_running
        self.peer_check = PeerCheck(access) if access is not None else None
        self.audit = audit
        self.config_path = config_path
        self.inflight = 0  # requests between their headers and their end: SIGTERM waits for them

    # ----- hooks ---------------------------------------------------------------------------
    def running(self) -> None:
        """mitmproxy has set up every listener (or failed to): the daemon may check them."""
        self.on_running()

    def client_connected(self, client: connection.Client) -> None:
        """Who opened this connection: looked up once, before any of its requests."""
        if self.peer_check is not None:
            self.peer_check.connected(client)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow_state(flow).started = time.monotonic()
        self.inflight += 1
        try:
            await self._decide(flow)
        except Exception:  # never let mitmproxy forward a request we did not decide on
            log.exception("internal error while handling %s %s", flow.request.method,
                          flow.request.path.split("?", 1)[0])
            answer_locally(flow, internal_error(), self.metrics, reason="internal_error")

    def request(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if not state.local and state.sent is None:
            state.sent = time.monotonic()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        access_log.upstream_answered(flow, self.metrics)
        strip_cors(flow)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """CONNECT on the forward listener: the client key guards tunnels too (no open relay).

        An exception here would make mitmproxy log it and open the tunnel anyway, so any error
        refuses the CONNECT instead.
        """
        try:
            shape = request_shape.header_refusal(flow.request.headers)
            if shape is not None:
                self.metrics.rejected.inc(shape.error)
                flow.response = shape.response()
                return
            admitted = self.key_check.connect(flow)  # first: a key may admit an outside peer
            if self._refused_peer(flow, connect=True):
                return
        except Exception:
            log.exception("internal error while checking the account or key of a CONNECT")
            flow.response = internal_error()
            return
        if admitted:
            return
        self.metrics.rejected.inc("client_key")
        log.warning("refused CONNECT without a valid client key")
        flow.response = key_required(407)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Intercept TLS for the API's real address only (see interception)."""
        try:
            interception.decide(data, self.api_origin)
        except Exception:  # when in doubt, a raw tunnel: it never carries our token
            log.exception("internal error while deciding about TLS interception")
            data.ignore_connection = True

    def next_layer(self, nextlayer: Any) -> None:
        """Bound what mitmproxy buffers before it knows the protocol (see mitm_patches)."""
        mitm_patches.refuse_undecided_flood(nextlayer)

    async def response(self, flow: http.HTTPFlow) -> None:
        try:
            if flow.response is not None and flow.response.status_code == 401:
                await replay.after_unauthorized(
                    flow, tokens=self.tokens, api_origin=self.api_origin,
                    context=self.upstream_tls, metrics=self.metrics)
        except Exception:  # the client still gets Qonic's own 401
            log.exception("retrying after a 401 failed")
        if flow_state(flow).replayed:
            strip_cors(flow)  # a replayed answer replaces the one seen in responseheaders
        self._observe(flow, flow.response.status_code if flow.response else 0)

    def error(self, flow: http.HTTPFlow) -> None:
        self._observe(flow, flow.response.status_code if flow.response else 502)

    # ----- the decision --------------------------------------------------------------------
    async def _decide(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        shape = request_shape.refusal(flow, self.listeners)
        if shape is not None:
            return refuse(flow, shape, self.metrics)
        credentials = Credentials.take(request)
        keyed = self.key_check.presented(flow, credentials)
        if self._refused_peer(flow):
            return None
        addressed = routing.addressed_to_us(flow, self.guard, self.listeners)
        refusal = self.guard.refusal(request, addressed)
        if refusal is not None:
            return refuse(flow, refusal, self.metrics)
        if not keyed:
            self.metrics.rejected.inc("client_key")
            log.warning("refused %s %s: no valid client key", request.method, short_path(request))
            status = 401 if isinstance(flow.client_conn.proxy_mode, ReverseMode) else 407
            return answer_locally(flow, key_required(status), self.metrics)

        destination = routing.route(flow, addressed=addressed, api_origin=self.api_origin)
        if isinstance(destination, Refusal):
            return refuse(flow, destination, self.metrics)
        if destination is routing.Route.ENDPOINT:
            caller = self.key_check.caller(flow, self.peer_check)
            return answer_locally(flow, await self.endpoints.answer(request, caller), self.metrics)
        if destination is routing.Route.API:
            access_log.mark_token_path(flow)
            no_token = await add_token(flow, self.tokens, self.api_origin)
            if no_token is not None:
                answer, reason = no_token
                answer_locally(flow, answer, self.metrics, reason=reason)
        return None

    def _refused_peer(self, flow: http.HTTPFlow, *, connect: bool = False) -> bool:
        """[access]: refuse (403 JSON, counted, logged once a minute) an account not admitted,
        or a read-only account's write; True when refused. A CONNECT only opens a tunnel: the
        requests inside an intercepted API tunnel are checked one by one."""
        if self.peer_check is None:
            return False
        peer = self.peer_check.peer(flow.client_conn)
        policy = self.peer_check.policy
        method = flow.request.method
        if not policy.allows(peer, keyed=self.key_check.held(flow)):
            refusal = peer_refused(refused_message(peer, self.config_path))
        elif connect or (limit := self.peer_check.limit(flow, peer)) is None:
            return False
        else:
            refusal = Refusal(403, *limit)
        if policy.should_log(peer):
            log.warning("refused %s %s from the local account %s: %s (logged once a minute per "
                        "account)", method, short_path(flow.request), peer.describe(),
                        refusal.error)
        access_log.mark_refused(flow, refusal.error)
        if connect:
            self.metrics.rejected.inc(refusal.error)
            flow.response = refusal.response()
            self._audit(flow, 403)
        else:
            answer_locally(flow, refusal.response(), self.metrics, reason=refusal.error)
        return True

    def _audit(self, flow: http.HTTPFlow, status: int) -> None:
        if self.audit is None or self.peer_check is None:
            return
        record = access_log.audit_record(flow, status, self.peer_check.peer(flow.client_conn),
                                         keyed=self.key_check.key is not None,
                                         key_id=self.key_check.key_id(flow))  # a minted key's
        if record is not None:
            self.audit.write(record)

    def _observe(self, flow: http.HTTPFlow, status: int) -> None:
        self._audit(flow, status)
        if access_log.observe(flow, status, self.metrics):
            self.inflight -= 1
