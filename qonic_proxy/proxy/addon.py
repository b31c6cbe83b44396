"""The mitmproxy addon: guard → operational endpoints → inject → observe.

It decides, for every request, whether it may go on and whether it earns the bearer token. It never
touches files or speaks OAuth itself: the TokenService does that. Every hook catches its own errors
and answers explicitly, because mitmproxy would otherwise log the error and forward the request
without our header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import http
from mitmproxy.proxy.mode_specs import RegularMode, ReverseMode

from qonic_proxy.hosts import Origin, normalise_host
from qonic_proxy.metrics import Metrics
from qonic_proxy.proxy import client_key, error_pages
from qonic_proxy.proxy.replay import resend
from qonic_proxy.tokens.service import TokenService

log = logging.getLogger("qonic_proxy.proxy")
access_log = logging.getLogger("qonic_proxy.access")

LOCAL_BODY_LIMIT = 1024 * 1024  # bodies up to this size are read and dropped before a local answer
# never sent upstream: the proxy credentials and our client key, wherever a client put them
# Sec-Fetch-Site values a browser sends only for requests a person or our own page started
SAME_ORIGIN_FETCH = ("none", "same-origin")
CORS_PREFIX = "access-control-"  # response headers that would grant a web page access


@dataclass
class ListenerInfo:
    """Where we listen: filled in by the daemon once mitmproxy has bound its sockets."""

    reverse_port: int = 0
    forward_port: int = 0
    public_host: str = "127.0.0.1"

    @property
    def reverse_url(self) -> str:
        return self._url(self.reverse_port)

    @property
    def forward_url(self) -> str | None:
        return self._url(self.forward_port) if self.forward_port else None

    def _url(self, port: int) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"http://{host}:{port}"


@dataclass
class Guard:
    """Browser-attack defences for everything that reaches a listener as a local request."""

    allowed_hosts: frozenset[str]
    listeners: ListenerInfo
    extra_origins: frozenset[str] = field(default_factory=frozenset)

    def host_allowed(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        return _strip_port(host_header).lower().rstrip(".") in self.allowed_hosts

    def cross_site_reason(self, headers: http.Headers) -> str | None:
        """Why a browser would call this request cross-site, or None when it is not."""
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site.strip().lower() not in SAME_ORIGIN_FETCH:
            return "Sec-Fetch-Site: " + fetch_site[:40]
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin):
            return "Origin: " + origin[:100]
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
        ours = {self.listeners.reverse_port, self.listeners.forward_port} - {0}
        return parts.hostname.lower() in self.allowed_hosts and port in ours


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
                  ) -> http.Response:
    """A local answer: JSON, never cached, never sniffed, no CORS grant."""
    response = http.Response.make(
        status,
        json.dumps(body, indent=2).encode() + b"\n",
        {
            "Content-Type": "application/json",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            **(headers or {}),
        },
    )
    return response


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
    ) -> None:
        self.api_origin = api_origin
        self.tokens = tokens
        self.metrics = metrics
        self.guard = guard
        self.listeners = listeners
        self.upstream_tls = upstream_tls
        self.key = key
        self.status_extra = status_extra
        self._keyed_connections: set[str] = set()  # CONNECT tunnels that presented the key
        self.on_running = on_running
        self.inflight = 0  # requests between their headers and their end: SIGTERM waits for them

    # ----- hooks ---------------------------------------------------------------------------
    def running(self) -> None:
        """mitmproxy has set up every listener (or failed to): the daemon may check them."""
        self.on_running()

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.metadata["qonic_start"] = time.monotonic()
        self.inflight += 1
        try:
            await self._decide(flow)
        except Exception:  # never let mitmproxy forward a request we did not decide on
            log.exception("internal error while handling %s %s", flow.request.method,
                          flow.request.path.split("?", 1)[0])
            self._answer(flow, json_response(500, {
                "error": "internal_error",
                "message": "qonic-proxy hit an internal error; see its log.",
            }), reason="internal_error")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        sent = flow.metadata.get("qonic_sent")
        if sent is not None and flow.response is not None:
            self.metrics.upstream_latency.observe(max(0.0, time.monotonic() - sent))
        _strip_cors(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        if "qonic_local" not in flow.metadata:
            flow.metadata.setdefault("qonic_sent", time.monotonic())

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """CONNECT on the forward listener: the client key guards tunnels too (no open relay).

        An exception here would make mitmproxy log it and open the tunnel anyway, so any error
        refuses the CONNECT instead.
        """
        if self.key is None:
            return
        try:
            presented = _proxy_key(flow.request.headers.get("proxy-authorization"))
            if client_key.matches(self.key, presented):
                self._keyed_connections.add(flow.client_conn.id)
                return
        except Exception:
            log.exception("internal error while checking the client key of a CONNECT")
        self.metrics.rejected.inc("client_key")
        log.warning("refused CONNECT without a valid client key")
        flow.response = _key_required(407)

    def next_layer(self, nextlayer: Any) -> None:
        """Bound what mitmproxy buffers before it knows the protocol (see error_pages)."""
        error_pages.refuse_undecided_flood(nextlayer)

    def client_disconnected(self, client: Any) -> None:
        self._keyed_connections.discard(client.id)

    async def response(self, flow: http.HTTPFlow) -> None:
        try:
            if flow.response is not None and flow.response.status_code == 401:
                await self._after_unauthorized(flow)
        except Exception:  # the client still gets Qonic's own 401
            log.exception("retrying after a 401 failed")
        if flow.metadata.get("qonic_replayed"):
            _strip_cors(flow)  # a replayed answer replaces the one seen in responseheaders
        self._observe(flow, flow.response.status_code if flow.response else 0)

    def error(self, flow: http.HTTPFlow) -> None:
        self._observe(flow, flow.response.status_code if flow.response else 502)

    # ----- decisions -----------------------------------------------------------------------
    async def _decide(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        mode = flow.client_conn.proxy_mode
        # taken out (never sent upstream) and kept for the client-key check
        proxy_authorization = request.headers.pop("proxy-authorization", None)
        key_header = request.headers.pop(client_key.KEY_HEADER, None)

        addressed_to_us = (isinstance(mode, ReverseMode) or self._is_self_request(flow)
                           or self._is_non_proxy_request(flow))
        if addressed_to_us and not self.guard.host_allowed(request.host_header):
            return self._refuse(flow, 403, "host_not_allowed",
                                f"Host header {request.host_header!r} is not in [proxy] "
                                "allowed_hosts; use http://127.0.0.1 or add the name there.")
        reason = self.guard.cross_site_reason(request.headers)
        if reason is not None:
            return self._refuse(flow, 403, "cross_site",
                                f"Cross-site browser request refused ({reason}); qonic-proxy only "
                                "serves local programs, not web pages.")
        if self.key is not None and not self._key_presented(flow, proxy_authorization,
                                                                key_header):
            self.metrics.rejected.inc("client_key")
            log.warning("refused %s %s: no valid client key", request.method,
                        request.path.split("?", 1)[0][:200])
            status = 401 if isinstance(mode, ReverseMode) else 407
            return self._answer(flow, _key_required(status))

        if addressed_to_us and request.path.startswith("/-/"):
            return await self._operational(flow)
        if isinstance(mode, RegularMode) and addressed_to_us:
            return self._refuse(flow, 404, "not_found",
                                "This is qonic-proxy's forward-proxy port; send requests through "
                                "it as a proxy, or call the reverse port.")

        target = Origin(request.scheme.lower(), normalise_host(request.host), request.port)
        if target.host == self.api_origin.host and target.scheme != self.api_origin.scheme:
            return self._refuse(flow, 403, "plain_http_refused",
                                f"Refusing to send a Qonic request over {target.scheme}; use "
                                f"{self.api_origin}.")
        if target != self.api_origin:
            return  # not ours: passes through untouched and without a token
        if isinstance(mode, ReverseMode):
            # keep_host_header lets the guard see the client's Host; upstream gets the API's
            request.host_header = self.api_origin.authority

        token = await self.tokens.get_access_token()
        if token is None:
            if not self.tokens.login_pending:
                self.tokens.offer_login()
            return self._answer(flow, self._login_required(), reason="login_required")
        request.headers["Authorization"] = f"Bearer {token}"
        flow.metadata["qonic_token"] = token

    def _login_required(self) -> http.Response:
        return json_response(401, {
            "error": "login_required",
            "message": "qonic-proxy has no valid Qonic token. " + self.tokens.what_to_do(),
        })

    def _key_presented(self, flow: http.HTTPFlow, proxy_authorization: str | None,
                       key_header: str | None) -> bool:
        """Check the client key wherever this listener accepts it, and strip it.

        Proxy-Authorization and the key header were already removed from the request (they
        never go upstream); their values are passed in.
        """
        assert self.key is not None
        request = flow.request
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            presented = key_header
            basic = client_key.key_from_basic(request.headers.get("authorization"))
            if basic is not None:
                request.headers.pop("authorization")
            return client_key.matches(self.key, presented or basic)
        if flow.client_conn.id in self._keyed_connections:
            return True  # inside a CONNECT tunnel that presented it
        return client_key.matches(self.key, _proxy_key(proxy_authorization))

    async def _after_unauthorized(self, flow: http.HTTPFlow) -> None:
        """Qonic said 401 to a token we sent: refresh once, then replay once if we can."""
        used = flow.metadata.get("qonic_token")
        if not used or flow.metadata.get("qonic_retried"):
            return
        flow.metadata["qonic_retried"] = True
        fresh = await self.tokens.refresh(used, force=True)
        if fresh is None and self.tokens.tokens is None:
            # the grant is gone: say what to do, as every following request will
            flow.response = self._login_required()
            return
        replayable = flow.request.raw_content is not None and not flow.request.stream
        if fresh is None or not replayable:
            self.metrics.rejected.inc("unauthorized_passed_through")
            return
        headers = [(k, v) for k, v in flow.request.headers.items(multi=True)
                   if k.lower() != "authorization"]
        headers.append(("Authorization", f"Bearer {fresh}"))
        if not any(k.lower() == "host" for k, _ in headers):
            headers.insert(0, ("Host", self.api_origin.authority))
        answer = await asyncio.to_thread(
            resend, host=self.api_origin.host, port=self.api_origin.port,
            context=self.upstream_tls, method=flow.request.method, target=flow.request.path,
            headers=headers, body=flow.request.raw_content)
        if answer is None:
            log.info("the retried answer is too large to hold; the client gets the 401 and "
                     "its own retry will use the refreshed token")
            return
        flow.response = http.Response.make(answer.status, answer.body, answer.headers)
        flow.response.reason = answer.reason
        flow.metadata["qonic_replayed"] = True
        log.info("retried %s %s once with a refreshed token: %d", flow.request.method,
                 flow.request.path.split("?", 1)[0][:200], answer.status)

    def _is_non_proxy_request(self, flow: http.HTTPFlow) -> bool:
        """An origin-form request (`GET /path`) on the forward listener outside a CONNECT tunnel.

        Browsers send these when a rebound DNS name points at our port; mitmproxy would take
        the destination from the Host header and relay it, so we treat it as addressed to us.
        """
        return (isinstance(flow.client_conn.proxy_mode, RegularMode)
                and error_pages.is_non_proxy_request(flow.request))

    def _is_self_request(self, flow: http.HTTPFlow) -> bool:
        """A plain request whose destination is one of our own listeners (never proxy to us)."""
        request = flow.request
        return (
            request.scheme == "http"
            and request.port in {self.listeners.reverse_port, self.listeners.forward_port}
            and (self.guard.host_allowed(request.host)
                 or request.host == self.listeners.public_host)
        )

    async def _operational(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path.split("?", 1)[0]
        if flow.request.method not in ("GET", "HEAD"):
            return self._answer(flow, json_response(405, {"error": "method_not_allowed"},
                                                    {"Allow": "GET, HEAD"}), reason=None)
        if path == "/-/health":
            body = {**self.tokens.health(), **self.status_extra()}
            return self._answer(flow, json_response(200 if body["logged_in"] else 503, body))
        if path == "/-/metrics":
            response = http.Response.make(200, self.metrics.render().encode(), {
                "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                "Cache-Control": "no-store",
            })
            return self._answer(flow, response)
        if path == "/-/login":
            try:
                url = await self.tokens.start_login()
            except Exception as err:  # port busy etc.: say so, in one sentence
                return self._answer(flow, json_response(503, {
                    "error": "login_unavailable", "message": str(err)}))
            return self._answer(flow, http.Response.make(302, b"", {
                "Location": url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}))
        return self._answer(flow, json_response(404, {
            "error": "not_found",
            "message": "Known endpoints: /-/health, /-/login, /-/metrics; Qonic paths start "
                       "with /v1/.",
        }))

    # ----- answering locally ---------------------------------------------------------------
    def _refuse(self, flow: http.HTTPFlow, status: int, error: str, message: str) -> None:
        log.warning("refused %s %s: %s", flow.request.method,
                    flow.request.path.split("?", 1)[0][:200], error)
        self._answer(flow, json_response(status, {"error": error, "message": message}),
                     reason=error)

    def _answer(self, flow: http.HTTPFlow, response: http.Response, reason: str | None = None,
                ) -> None:
        """Answer without going upstream.

        mitmproxy cannot answer a request whose body is already being streamed, so a large
        body is refused by closing the connection (the reason is logged and counted).
        """
        flow.metadata["qonic_local"] = True
        if reason:
            self.metrics.rejected.inc(reason)
        if flow.request.stream or _declared_body_size(flow.request) > LOCAL_BODY_LIMIT:
            log.warning("closing the connection instead of answering (%s): the request body "
                        "is too large to read and drop", reason or "local answer")
            flow.kill()
            return
        flow.response = response

    def _observe(self, flow: http.HTTPFlow, status: int) -> None:
        started = flow.metadata.pop("qonic_start", None)
        if started is not None:
            self.inflight -= 1
        listener = "reverse" if isinstance(flow.client_conn.proxy_mode, ReverseMode) else "forward"
        self.metrics.requests.inc(listener, f"{status // 100}xx" if status else "error")
        duration_ms = (time.monotonic() - started) * 1000 if started is not None else 0.0
        response = flow.response
        size = _body_size(response) if response is not None else 0
        target = _loggable_target(flow)
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
                   "listener": listener, "token": bool(flow.metadata.get("qonic_token"))},
        )


def _strip_cors(flow: http.HTTPFlow) -> None:
    """No CORS grant on answers that went through with the user's token (or reverse mode).

    Whatever policy the API has for its own web app, a page must never be allowed to read an
    answer that our token earned.
    """
    response = flow.response
    if response is None:
        return
    if flow.metadata.get("qonic_token") or isinstance(flow.client_conn.proxy_mode, ReverseMode):
        for name in {n for n in response.headers if n.lower().startswith(CORS_PREFIX)}:
            del response.headers[name]


def _proxy_key(proxy_authorization: str | None) -> str | None:
    return (client_key.key_from_basic(proxy_authorization)
            or client_key.key_from_bearer(proxy_authorization))


def _key_required(status: int) -> http.Response:
    challenge = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    where = ("Proxy-Authorization (e.g. HTTPS_PROXY=http://qonic:KEY@host:port)" if status == 407
             else f"the {client_key.KEY_HEADER} header or Basic auth (curl -u qonic:KEY)")
    return json_response(status, {
        "error": "client_key_required",
        "message": f"This qonic-proxy requires its client key; send it in {where}. The key is "
                   "in the file named by [proxy] client_key_file.",
    }, {challenge: 'Basic realm="qonic-proxy"'})


def _declared_body_size(request: http.Request) -> int:
    if "transfer-encoding" in request.headers:
        return LOCAL_BODY_LIMIT + 1  # unknown length: treat as large
    try:
        return int(request.headers.get("content-length", "0"))
    except ValueError:
        return LOCAL_BODY_LIMIT + 1


def _body_size(response: http.Response) -> int | None:
    if response.raw_content is not None:
        return len(response.raw_content)
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _loggable_target(flow: http.HTTPFlow) -> str:
    """Host (forward mode only) and path without the query string: queries can carry secrets."""
    path = flow.request.path.split("?", 1)[0][:300]
    if isinstance(flow.client_conn.proxy_mode, ReverseMode):
        return path
    return f"{flow.request.scheme}://{flow.request.pretty_host}{path}"
