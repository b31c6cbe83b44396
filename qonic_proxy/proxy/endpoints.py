"""Our operational endpoints under `/-/` on the reverse listener: health, login, metrics.

`POST /-/login/paste` hands the pending login a pasted address (`qonic-proxy login --paste`).
Browsers cannot use it: it needs a custom header (a cross-site page cannot send one without a
CORS preflight, which is refused), JSON, and no `Origin` or `Sec-Fetch-*` header at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from qonic_proxy.metrics import Metrics
from qonic_proxy.oauth.paste import ADDRESS_HEADER, PASTE_HEADER, PASTE_PATH
from qonic_proxy.proxy.responses import json_response
from qonic_proxy.tokens.paste_login import paste_into
from qonic_proxy.tokens.service import TokenService

MAX_PASTE_BODY = 16 * 1024


@dataclass
class Endpoints:
    """Answers `/-/...` requests; never goes upstream."""

    tokens: TokenService
    metrics: Metrics
    status_extra: Callable[[], dict[str, Any]] = dict

    async def answer(self, request: http.Request) -> http.Response:
        path = request.path.split("?", 1)[0]
        if path == PASTE_PATH:
            return await self._paste(request)
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

    async def _paste(self, request: http.Request) -> http.Response:
        if request.method != "POST":
            return json_response(405, {"error": "method_not_allowed"}, {"Allow": "POST"})
        headers = request.headers
        if ("origin" in headers or any(name.lower().startswith("sec-fetch-") for name in headers)
                or headers.get(PASTE_HEADER) != "1"):
            return json_response(403, {"error": "not_for_browsers", "message":
                                       "Only `qonic-proxy login --paste` may use this path."})
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return json_response(415, {"error": "unsupported_media_type",
                                       "message": "Send a JSON body: {\"address\": \"...\"}."})
        body = request.raw_content
        address = headers.get(ADDRESS_HEADER) if not body else None
        if body and len(body) <= MAX_PASTE_BODY:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            address = parsed.get("address") if isinstance(parsed, dict) else None
        if not isinstance(address, str):
            return json_response(400, {"error": "bad_request", "message":
                                       "Send a JSON body: {\"address\": \"...\"}."})
        status, sentence = await paste_into(self.tokens, address)
        body_out = {"status": "logged_in"} if status == 200 else {"error": "login_not_completed"}
        return json_response(status, {**body_out, "message": sentence})

    async def _login(self) -> http.Response:
        try:
            url = await self.tokens.start_login()
        except Exception as err:  # port busy etc.: say so, in one sentence
            return json_response(503, {"error": "login_unavailable", "message": str(err)})
        return http.Response.make(302, b"", {
            "Location": url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
