"""Our operational endpoints under `/-/` on the reverse listener: health, login, metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from qonic_proxy.metrics import Metrics
from qonic_proxy.proxy.responses import json_response
from qonic_proxy.tokens.service import TokenService


@dataclass
class Endpoints:
    """Answers `/-/...` requests; never goes upstream."""

    tokens: TokenService
    metrics: Metrics
    status_extra: Callable[[], dict[str, Any]] = dict

    async def answer(self, request: http.Request) -> http.Response:
        path = request.path.split("?", 1)[0]
        if request.method not in ("GET", "HEAD"):
            return json_response(405, {"error": "method_not_allowed"}, {"Allow": "GET, HEAD"})
        if path == "/-/health":
            body = {**self.tokens.health(), **self.status_extra()}
            return json_response(200 if body["logged_in"] else 503, body)
        if path == "/-/metrics":
            return http.Response.make(200, self.metrics.render().encode(), {
                "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                "Cache-Control": "no-store",
            })
        if path == "/-/login":
            return await self._login()
        return json_response(404, {
            "error": "not_found",
            "message": "Known endpoints: /-/health, /-/login, /-/metrics; Qonic paths start "
                       "with /v1/.",
        })

    async def _login(self) -> http.Response:
        try:
            url = await self.tokens.start_login()
        except Exception as err:  # port busy etc.: say so, in one sentence
            return json_response(503, {"error": "login_unavailable", "message": str(err)})
        return http.Response.make(302, b"", {
            "Location": url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
