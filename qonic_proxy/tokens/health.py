"""What /-/health says about the token: logged in, waiting for a login, or riding out an outage.

Read-only over the TokenService's public state, and never a secret: the scopes, the expiry, the
last refresh, the outage (last error and next attempt) and whether the cache file is current.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qonic_proxy.tokens.advice import login_advice, no_browser_here
from qonic_proxy.tokens.outage import OUTAGE_ACTION, whole_seconds

if TYPE_CHECKING:
    from qonic_proxy.tokens.service import TokenService


def rounded(value: float | None) -> int | None:
    """Whole seconds for people and JSON (None stays None)."""
    return None if value is None else int(value)


def health_body(service: TokenService) -> dict[str, Any]:
    usable = service.is_usable()
    blocked = service.unavailable()
    tokens = service.tokens
    status = "ok" if usable else "token_endpoint_unavailable" if blocked else "login_required"
    body: dict[str, Any] = {
        "status": status,
        "logged_in": usable,
        "expires_in": rounded(service.seconds_until_expiry()),
        "scopes": list(tokens.scopes) if tokens else [],
        "refresh_token": bool(tokens and tokens.refresh_token),
        "login_in_progress": service.login_pending,
        "last_refresh": None,
    }
    last = service.last_refresh
    if last:
        body["last_refresh"] = {"at": round(last.at), "outcome": last.outcome,
                                "detail": last.detail}
    outage = service.outage
    if outage is not None:
        failing = {"last_error": outage.message,
                   "next_attempt_in": whole_seconds(service.next_attempt_in())}
        if blocked:
            body.update(failing, action=OUTAGE_ACTION)
        elif usable:
            body["refresh_failing"] = failing
    if not usable and not blocked:
        # the steps only: the cause of a failed login has its own field below
        body["action"] = login_advice(page=service.login_page_url(),
                                      authorize_url=service.pending_authorize_url,
                                      headless=no_browser_here(service.environ))
        if service.last_login_error:
            body["last_login_error"] = service.last_login_error
    reason = service.unsaved_reason
    body["cache"] = {"path": str(service.store.path), "saved": reason is None, "error": reason}
    return body
