"""Our operational endpoints under `/-/` on the reverse listener: health, login, metrics, keys.

`POST /-/keys` mints a key for `exec`/`env` (see access/minted_keys): headers
`X-Qonic-Proxy-Pid: PID` (the process the key lives with) and optionally
`X-Qonic-Proxy-Read-Only: 1`; 201 JSON `{"key", "key_id", "read_only", "pid"}`. Only an identified
local account that [access] admits, or a holder of the configured client key, may mint; the key
carries the caller's account and at most its rights. `DELETE /-/keys/ID` revokes one (its
account, its own holder, or a configured-key holder). Parameters are headers, not a body, as we
answer in `requestheaders`; both refuse requests a browser could send.

`POST /-/login/paste` hands the pending login a pasted address (`qonic-proxy login --paste`).
Browsers cannot use it: it needs a custom header (a cross-site page cannot send one without a
CORS preflight, which is refused), JSON, and no `Origin` or `Sec-Fetch-*` header at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from qonic_proxy.access.minted_keys import (
    KEYS_PATH,
    PID_HEADER,
    READ_ONLY_HEADER,
    Grant,
    MintedKeys,
    MintError,
)
from qonic_proxy.metrics import Metrics
from qonic_proxy.oauth.paste import ADDRESS_HEADER, PASTE_HEADER, PASTE_PATH
from qonic_proxy.proxy.responses import json_response
from qonic_proxy.tokens.paste_login import paste_into
from qonic_proxy.tokens.service import TokenService

MAX_PASTE_BODY = 16 * 1024


@dataclass(frozen=True)
class Caller:
    """Who sends an endpoint request: the peer's uid (None: unidentified) and its key."""

    uid: int | None
    configured_key: bool = False
    grant: Grant | None = None


def from_browser(headers: http.Headers) -> bool:
    return "origin" in headers or any(name.lower().startswith("sec-fetch-") for name in headers)


@dataclass
class Endpoints:
    """Answers `/-/...` requests; never goes upstream."""

    tokens: TokenService
    metrics: Metrics
    status_extra: Callable[[], dict[str, Any]] = dict
    minted: MintedKeys = field(default_factory=MintedKeys)

    async def answer(self, request: http.Request, caller: Caller | None = None) -> http.Response:
        path = request.path.split("?", 1)[0]
        if path == PASTE_PATH:
            return await self._paste(request)
        if path == KEYS_PATH or path.startswith(KEYS_PATH + "/"):
            return self._keys(request, path, caller)
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
        if from_browser(headers) or headers.get(PASTE_HEADER) != "1":
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

    def _keys(self, request: http.Request, path: str, caller: Caller | None) -> http.Response:
        if from_browser(request.headers):
            return json_response(403, {"error": "not_for_browsers", "message":
                                       "Only `qonic-proxy exec` and `env` may use this path."})
        if caller is None or (caller.uid is None and not caller.configured_key):
            return json_response(403, {"error": "keys_not_allowed", "message":
                                       "Only an identified local account that [access] admits, "
                                       "or a holder of the configured client key, may mint "
                                       "keys."})
        if path == KEYS_PATH and request.method == "POST":
            return self._mint(request, caller)
        key_id = path[len(KEYS_PATH) + 1:]
        if key_id and "/" not in key_id and request.method == "DELETE":
            grant = self.minted.get(key_id)
            if grant is None:
                return json_response(404, {"error": "no_such_key", "message":
                                           "No live key has this id (it may have ended with "
                                           "its process)."})
            if not (caller.configured_key or caller.grant is grant
                    or (grant.uid is not None and grant.uid == caller.uid)):
                return json_response(403, {"error": "not_your_key", "message":
                                           "This key was minted for another account."})
            self.minted.revoke(key_id)
            return json_response(200, {"revoked": key_id})
        allow = "POST" if path == KEYS_PATH else "DELETE"
        return json_response(405, {"error": "method_not_allowed"}, {"Allow": allow})

    def _mint(self, request: http.Request, caller: Caller) -> http.Response:
        pid_text = request.headers.get(PID_HEADER, "")
        narrow = request.headers.get(READ_ONLY_HEADER, "0")
        if not pid_text.isdigit() or len(pid_text) > 10 or narrow not in ("0", "1"):
            return json_response(400, {"error": "bad_request", "message":
                                       f"Send {PID_HEADER}: PID (the process the key lives "
                                       f"with) and optionally {READ_ONLY_HEADER}: 1."})
        read_only = narrow == "1" or (caller.grant is not None and caller.grant.read_only)
        try:
            key, grant = self.minted.mint(caller.uid, int(pid_text), read_only=read_only)
        except MintError as err:
            return json_response(err.status, {"error": "key_not_minted", "message": str(err)})
        return json_response(201, {"key": key, "key_id": grant.key_id, "read_only": read_only,
                                   "pid": grant.pid})

    async def _login(self) -> http.Response:
        try:
            url = await self.tokens.start_login()
        except Exception as err:  # port busy etc.: say so, in one sentence
            return json_response(503, {"error": "login_unavailable", "message": str(err)})
        return http.Response.make(302, b"", {
            "Location": url, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
