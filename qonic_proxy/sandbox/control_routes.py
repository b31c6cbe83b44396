"""Unauthenticated test controls under `/-/sandbox/`: stats, revocation, token lifetime, faults.

Why: an end-to-end test (or a demo) drives expiry and revocation from outside the process the
same way it would wait for them against Qonic. No authentication: the sandbox binds loopback only.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

from qonic_proxy.sandbox.api_routes import EXPORTED_PATH
from qonic_proxy.sandbox.exchange import MAX_FORM_BODY, Exchange
from qonic_proxy.sandbox.faults import token_fault_from
from qonic_proxy.sandbox.patterns import pattern_bytes
from qonic_proxy.sandbox.routing import Context, Route, route


def stats(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    ex.send_json(200, dict(ctx.grants.snapshot(), faults=ctx.faults.snapshot()))


def _json_body(ex: Exchange) -> object:
    try:
        data: object = json.loads(ex.read_small_body(MAX_FORM_BODY) or b"null")
    except ValueError:
        data = None
    return data


def exported(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    ex.send_bytes(200, pattern_bytes(0, 4096), "application/octet-stream")


def revoke(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    """`?what=access` kills access tokens only; `?what=grants` kills refresh tokens too."""
    what = (parse_qs(ex.query).get("what") or [""])[0]
    if what == "access":
        ctx.grants.revoke_access()
    elif what == "grants":
        ctx.grants.revoke_grants()
    else:
        return ex.send_json(400, {"error": "what must be access or grants"})
    ex.send_json(200, {"revoked": what})
    return None


def config(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    """`{"access_token_lifetime": seconds}`: applies to tokens issued from now on."""
    data = _json_body(ex)
    if (
        not isinstance(data, dict)
        or set(data) != {"access_token_lifetime"}
        or not isinstance(data["access_token_lifetime"], int | float)
        or data["access_token_lifetime"] <= 0
    ):
        return ex.send_json(400, {"error": 'expected {"access_token_lifetime": seconds > 0}'})
    ctx.grants.set_access_token_lifetime(float(data["access_token_lifetime"]))
    ex.send_json(200, {"access_token_lifetime": data["access_token_lifetime"]})
    return None


def faults(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    ex.send_json(200, ctx.faults.snapshot())


def token_fault(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    """`{"mode": "status"|"hang"|"reset", "seconds": s, "status"?, "retry_after"?, "hang"?}`
    switches a token-endpoint fault on for `seconds`; `{"mode": "off"}` switches it off."""
    data = _json_body(ex)
    if data == {"mode": "off"}:
        ctx.faults.clear_token_fault()
        return ex.send_json(200, ctx.faults.snapshot())
    try:
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object.")
        fault = token_fault_from(data)
    except ValueError as exc:
        return ex.send_json(400, {"error": f"bad token fault: {exc}"})
    ctx.faults.set_token_fault(fault)
    ex.send_json(200, ctx.faults.snapshot())
    return None


ROUTES: tuple[Route, ...] = (
    route("GET", r"/-/sandbox/stats", stats),
    route("GET", re.escape(EXPORTED_PATH), exported),
    route("POST", r"/-/sandbox/revoke", revoke),
    route("POST", r"/-/sandbox/config", config),
    route("GET", r"/-/sandbox/faults", faults),
    route("POST", r"/-/sandbox/faults/token", token_fault),
)
