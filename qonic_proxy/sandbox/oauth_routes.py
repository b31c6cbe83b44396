"""The OAuth endpoints: authorize (consent page), consent, token, scopes.

Why: these handlers only translate between HTTP and `grants` (query/form in, page/redirect/JSON
out); every decision is made there. The consent page is a form `POST /v1/auth/consent` with a
hidden `consent_id` and a button `decision` = `approve` | `deny`, so a scripted browser can
submit it.
"""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs

from qonic_proxy.qonic import AUTHORIZE_PATH, CONSENT_PATH, SCOPES_PATH, TOKEN_PATH
from qonic_proxy.sandbox.exchange import MAX_FORM_BODY, Exchange
from qonic_proxy.sandbox.faults import TokenFault
from qonic_proxy.sandbox.grants import ConsentExpired, OAuthError, RedirectError, UntrustedRequest
from qonic_proxy.sandbox.routing import Context, Route, route

FORM_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

SCOPE_DESCRIPTIONS: dict[str, str] = {
    "projects:read": "Read your projects",
    "projects:write": "Create and change projects",
    "models:read": "Read models and download model files",
    "models:write": "Upload and change models",
    "issues:read": "Read issues",
    "libraries:read": "Read libraries",
    "libraries:write": "Change libraries",
}

_UNTRUSTED_PAGES = {
    "client_id": (
        "Unknown application",
        "<h1>Unknown application</h1><p>The client_id <code>{}</code> is not registered.</p>",
    ),
    "redirect_uri": (
        "Invalid redirect_uri",
        "<h1>Invalid redirect_uri</h1><p>The redirect_uri <code>{}</code> is not registered "
        "for this application; it must match a registered URI exactly.</p>",
    ),
}


def _form_type(ex: Exchange) -> str:
    return (ex.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def authorize(ctx: Context, ex: Exchange, _: re.Match[str]) -> None:
    grants = ctx.grants
    grants.count("authorize")
    try:
        pending = grants.start_authorization(parse_qs(ex.query, keep_blank_values=True))
    except UntrustedRequest as err:
        title, body = _UNTRUSTED_PAGES[err.field]
        return ex.send_html(400, title, body.format(html.escape(err.value)))
    except RedirectError as err:
        return ex.redirect(err.location)
    if ctx.settings.auto_consent:
        return ex.redirect(grants.approve(pending))
    consent_id = grants.new_consent(pending)
    items = "".join(
        f"<li>{html.escape(SCOPE_DESCRIPTIONS.get(w, w))} (<code>{html.escape(w)}</code>)</li>"
        for w in pending.scope.split(" ")
    )
    ex.send_html(
        200,
        "Allow access?",
        "<h1>Allow access?</h1>"
        f"<p>The application <b>{html.escape(pending.client_id)}</b> asks to:</p><ul>{items}</ul>"
        f'<form method="post" action="{CONSENT_PATH}">'
        f'<input type="hidden" name="consent_id" value="{html.escape(consent_id)}">'
        '<button type="submit" name="decision" value="approve">Allow</button> '
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form>",
    )
    return None


def consent(ctx: Context, ex: Exchange, _: re.Match[str]) -> None:
    ctx.grants.count("consent")
    if _form_type(ex) != FORM_TYPE:
        return ex.send_html(400, "Bad request", "<h1>Bad request</h1><p>Form expected.</p>")
    form = parse_qs(ex.read_small_body(MAX_FORM_BODY).decode("utf-8", "replace"))
    consent_id = (form.get("consent_id") or [""])[0]
    decision = (form.get("decision") or [""])[0]
    try:
        location = ctx.grants.answer_consent(consent_id, approve=decision == "approve")
    except ConsentExpired:
        return ex.send_html(
            400,
            "Consent expired",
            "<h1>This consent request is no longer valid</h1>"
            "<p>Start the login again from the application.</p>",
        )
    except RedirectError as err:
        location = err.location
    ex.redirect(location)
    return None


def token(ctx: Context, ex: Exchange, _: re.Match[str]) -> None:
    fault = ctx.faults.on_token_request()
    if fault is not None:
        return _token_fault(ctx, ex, fault)
    try:
        if _form_type(ex) != FORM_TYPE:
            raise OAuthError("invalid_request", f"The body must be {FORM_TYPE}.")
        raw = ex.read_small_body(MAX_FORM_BODY)
        try:
            parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise OAuthError("invalid_request", "The body is not UTF-8.") from None
        body = ctx.grants.token(parsed, header_auth=ex.headers.get("Authorization") is not None)
    except OAuthError as err:
        return _token_error(ctx, ex, err)
    ex.send_json(200, body, NO_STORE)
    return None


def _token_error(
    ctx: Context, ex: Exchange, err: OAuthError, headers: dict[str, str] | None = None
) -> None:
    if ctx.settings.error_style == "qonic":
        body: dict[str, str] = {"errorDetails": f"{err.code}: {err.description}"}
    else:
        body = {"error": err.code, "error_description": err.description}
    ex.send_json(err.status, body, {**NO_STORE, **(headers or {})})


def _token_fault(ctx: Context, ex: Exchange, fault: TokenFault) -> None:
    """Carry out a switched-on fault (faults.py) instead of answering the token request."""
    ex.read_small_body(MAX_FORM_BODY)
    if fault.mode == "reset":
        return ex.abort()
    if fault.mode == "hang":
        ctx.faults.hold(fault.hang)
        return ex.drop()
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    code = "temporarily_unavailable" if fault.status in (429, 503) else "server_error"
    err = OAuthError(code, "The token endpoint is unavailable (sandbox fault).", fault.status)
    return _token_error(ctx, ex, err, headers)


def scopes(ctx: Context, ex: Exchange, _: re.Match[str]) -> None:
    ex.send_json(200, [{"name": k, "description": v} for k, v in SCOPE_DESCRIPTIONS.items()])


ROUTES: tuple[Route, ...] = (
    route("GET", re.escape(AUTHORIZE_PATH), authorize),
    route("POST", re.escape(CONSENT_PATH), consent),
    route("POST", re.escape(TOKEN_PATH), token),
    route("GET", re.escape(SCOPES_PATH), scopes),
)
