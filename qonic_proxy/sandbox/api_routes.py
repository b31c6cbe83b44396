"""The Qonic API look-alikes: projects, models, big downloads and uploads, export, echo.

Why: they give the proxy real work (bearer checks with scopes, streamed bodies both ways,
redirects off the API origin) while holding nothing in memory. Every route here sits behind
`bearer_guard`: 401 without a live token, 403 without the route's scope.
"""

from __future__ import annotations

import hashlib
import re
import time
from urllib.parse import parse_qs

from qonic_proxy.sandbox.exchange import Exchange
from qonic_proxy.sandbox.grants import Access
from qonic_proxy.sandbox.patterns import PIECE, pattern_bytes
from qonic_proxy.sandbox.routing import Context, Route, route

MAX_DOWNLOAD = 1 << 40
EXPORTED_PATH = "/-/sandbox/exported.ifc"  # where export results redirect by default

SAMPLE_PROJECTS: list[dict[str, str]] = [
    {"id": "p-1001", "name": "Sandbox Tower"},
    {"id": "p-1002", "name": "Sandbox Bridge"},
    {"id": "p-1003", "name": "Sandbox School"},
]

SAMPLE_MODELS: list[dict[str, str]] = [
    {"id": "m-architecture", "name": "Architecture.ifc"},
    {"id": "m-structure", "name": "Structure.ifc"},
]


def bearer(ctx: Context, ex: Exchange) -> tuple[str | None, Access | None]:
    """The presented bearer token (exactly one Authorization header) and its live record."""
    values = ex.headers.get_all("Authorization") or []
    if len(values) != 1:
        return None, None
    scheme, _, token = values[0].partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None, None
    return token, ctx.grants.check_access(token)


def bearer_guard(ctx: Context, ex: Exchange, chosen: Route) -> bool:
    """401 without a live token, 403 without the route's scope; counts what it decided."""
    token, access = bearer(ctx, ex)
    if access is None:
        ctx.grants.count("api", "unauthorized")
        description = (
            "A bearer token is required."
            if token is None
            else "The access token is invalid, expired or revoked."
        )
        challenge = (
            'Bearer realm="qonic-sandbox", error="invalid_token", '
            f'error_description="{description}"'
        )
        ex.send_json(
            401,
            {"error": "invalid_token", "error_description": description},
            {"WWW-Authenticate": challenge},
        )
        return False
    if chosen.scope is not None and chosen.scope not in access.scope.split():
        ctx.grants.count("api", "forbidden")
        ex.send_json(
            403,
            {"error": "insufficient_scope", "error_description": f"Needs scope {chosen.scope}."},
            {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{chosen.scope}"'},
        )
        return False
    if chosen.allows(ex.method) and chosen.handler is not unknown:
        ctx.grants.count("api", "ok")
    return True


def projects(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    ex.send_json(200, SAMPLE_PROJECTS)


def models(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    ex.send_json(200, [dict(model, projectId=m["project"]) for model in SAMPLE_MODELS])


def download(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    """`size` pattern bytes, in 64 KiB pieces, `chunk_delay` seconds apart, optionally chunked;
    `reset_after=N` resets the connection (RST) once N bytes of the body are sent (a fault)."""
    args = parse_qs(ex.query)
    try:
        size = int((args.get("size") or ["1048576"])[0])
        delay = float((args.get("chunk_delay") or ["0"])[0])
        reset_after = int((args.get("reset_after") or [str(MAX_DOWNLOAD + 1)])[0])
    except ValueError:
        size, delay, reset_after = -1, -1.0, -1
    if not 0 <= size <= MAX_DOWNLOAD or not 0 <= delay <= 30 or reset_after < 0:
        return ex.send_error(400, "invalid_request", "Bad size, chunk_delay or reset_after.")
    chunked = (args.get("chunked") or ["0"])[0] == "1" and ex.http11
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{_safe_name(m["model"])}.ifc"',
    }
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(size)
    ex.start(200, headers)
    offset = 0
    while offset < size:
        if offset >= reset_after:
            return ex.abort()
        if offset and delay:
            time.sleep(delay)
        piece = pattern_bytes(offset, min(PIECE, size - offset, max(1, reset_after - offset)))
        ex.write(b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece)
        offset += len(piece)
    if chunked:
        ex.write(b"0\r\n\r\n")
    return None


def _digest_body(ex: Exchange) -> tuple[int, str]:
    """Read the whole request body in pieces: its length and SHA-256 hex."""
    digest = hashlib.sha256()
    n = 0
    for chunk in ex.body_chunks():
        digest.update(chunk)
        n += len(chunk)
    return n, digest.hexdigest()


def upload(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    n, sha = _digest_body(ex)
    ex.send_json(200, {"bytes": n, "sha256": sha})


def export_result(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    ex.redirect(ctx.settings.export_redirect_url or (ctx.url + EXPORTED_PATH))


def echo(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    """What arrived: method, path, query, headers (the bearer only as valid/invalid), body hash."""
    n, sha = _digest_body(ex)
    headers: dict[str, str] = {}
    for name in dict.fromkeys(ex.headers.keys()):
        if name.lower() == "authorization":
            _, access = bearer(ctx, ex)
            headers[name] = "<valid bearer>" if access is not None else "<invalid>"
        else:
            headers[name] = ", ".join(ex.headers.get_all(name) or [])
    ex.send_json(
        200,
        {
            "method": ex.method,
            "path": ex.path,
            "query": ex.query,
            "args": parse_qs(ex.query, keep_blank_values=True),
            "headers": headers,
            "bytes": n,
            "sha256": sha,
        },
    )


def unknown(ctx: Context, ex: Exchange, m: re.Match[str]) -> None:
    ex.not_found()


def _safe_name(text: str) -> str:
    """A path segment made harmless for a header value."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100] or "model"


_SEG = r"[^/]*"
_MODEL = rf"/v1/projects/(?P<project>{_SEG})/models/(?P<model>{_SEG})"

# A trailing slash is ignored, as Qonic does.
ROUTES: tuple[Route, ...] = (
    route("GET", r"/v1/projects/*", projects, scope="projects:read", guard=bearer_guard),
    route("GET", rf"/v1/projects/(?P<project>{_SEG})/models/*", models, scope="models:read",
          guard=bearer_guard),
    route("GET", _MODEL + "/download/*", download, scope="models:read", guard=bearer_guard),
    route("GET", _MODEL + rf"/export-ifc/{_SEG}/result/*", export_result, scope="models:read",
          guard=bearer_guard),
    route("POST PUT", r"/v1/upload/*", upload, scope="models:write", guard=bearer_guard),
    route("", r"/v1/echo/*", echo, guard=bearer_guard),
    # Any other Qonic path: the token is checked first (as Qonic does), then 404.
    route("", r"/v1/.*", unknown, guard=bearer_guard),
)
