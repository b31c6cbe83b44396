"""The authorization response (RFC 6749 section 4.1.2): is this request the redirect we wait for?

Pure: it takes the method and target of one request and the login's path and `state`, and
returns what Qonic sent, or raises BadRequest with the status and a sentence for the page.
Strict on purpose: exactly one state (compared in constant time), exactly one of code and error,
no repeated parameter, so a stray or hostile request cannot pass for the real redirect.
"""

from __future__ import annotations

import hmac
import urllib.parse
from dataclasses import dataclass, field

from qonic_proxy.oauth.messages import clean

STRICT_PARAMS = ("state", "code", "error", "error_description", "error_uri")
MAX_FIELDS = 50


class BadRequest(Exception):
    """Not the redirect: `status` for the answer, the message (safe to show) for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AuthorizationResponse:
    """What a valid redirect carried: a code, or an error with its description."""

    code: str | None = field(default=None, repr=False)
    error: str | None = None
    description: str | None = None


def _params(query: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(
            query,
            keep_blank_values=True,
            strict_parsing=bool(query),
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(400, "The query string is malformed") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in STRICT_PARAMS:
            if name in params:
                raise BadRequest(400, f"The parameter {name} appears more than once")
            params[name] = value
    return params


def parse_authorization_response(
    method: str, target: str, *, path: str, state: str
) -> AuthorizationResponse:
    """Check the request line and query of one request; BadRequest for anything else."""
    if not target.startswith("/"):
        raise BadRequest(400, "The request target is malformed")
    got_path, _, query = target.partition("?")
    query = query.partition("#")[0]
    if got_path != path:
        raise BadRequest(404, "There is nothing at this address")
    if method != "GET":
        raise BadRequest(405, "Only GET is accepted here")
    params = _params(query)
    got_state = params.get("state")
    if got_state is None:
        raise BadRequest(400, "The state parameter is missing")
    if not hmac.compare_digest(got_state.encode("utf-8"), state.encode("utf-8")):
        raise BadRequest(400, "The state does not belong to the login in progress")
    code, error = params.get("code"), params.get("error")
    if (code is None) == (error is None):
        raise BadRequest(400, "Exactly one of code and error must be present")
    if code is not None:
        if not code:
            raise BadRequest(400, "The code parameter is empty")
        return AuthorizationResponse(code=code)
    return AuthorizationResponse(
        error=clean(error or "unknown_error", 60) or "unknown_error",
        description=clean(params.get("error_description", "")) or None,
    )
