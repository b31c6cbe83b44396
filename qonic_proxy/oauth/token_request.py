"""Token requests as data (RFC 6749 sections 4.1.3 and 6) and the parser of their answers.

Pure: the builders return what to send and `parse_token_response` turns what came back into a
TokenSet or one clear TokenEndpointError; sending is `transport`'s job. That keeps every rule
about the form and the answer testable without a socket.
"""

from __future__ import annotations

import email.utils
import json
import math
import urllib.parse
from collections.abc import Iterable
from typing import Any, NamedTuple

from qonic_proxy.config.model import Config
from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.oauth.messages import advice, clean, server_error
from qonic_proxy.oauth.messages import redact as redact_secrets
from qonic_proxy.oauth.tokenset import BEARER, TokenSet, finite_float, jwt_exp

MAX_TOKEN_RESPONSE = 1024 * 1024  # a token response is a few KiB; anything huge is not one
USER_AGENT = "qonic-proxy"


class TokenRequest(NamedTuple):
    """(url, headers, body) of one token request. The body holds secrets: repr leaves it out."""

    url: str
    headers: dict[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"TokenRequest(url={self.url!r}, body=<{len(self.body)} bytes>)"


def _form(cfg: Config, fields: dict[str, str]) -> TokenRequest:
    """The client's own fields first, then the grant's; form-encoded as RFC 6749 asks."""
    form = {"client_id": cfg.oauth.client_id}
    if cfg.oauth.client_secret is not None:
        form["client_secret"] = cfg.oauth.client_secret
    form.update(fields)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    body = urllib.parse.urlencode(form).encode("ascii")
    return TokenRequest(cfg.qonic.token_url, headers, body)


def prepare_code_exchange(cfg: Config, *, code: str, code_verifier: str) -> TokenRequest:
    """The authorization-code grant with the PKCE verifier (RFC 7636 section 4.5)."""
    return _form(
        cfg,
        {
            "code": code,
            "redirect_uri": cfg.oauth.redirect_uri,  # byte-identical to the authorize step
            "code_verifier": code_verifier,
            "grant_type": "authorization_code",
        },
    )


def prepare_refresh(cfg: Config, refresh_token: str) -> TokenRequest:
    """The refresh-token grant (RFC 6749 section 6)."""
    return _form(cfg, {"grant_type": "refresh_token", "refresh_token": refresh_token})


# --------------------------------------------------------------------------------------------
# The answer


def _first(data: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in data and data[name] is not None:
            return data[name]
    return None


def _expires_in(value: object, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    number = finite_float(value)
    if number is None or number < 0:
        raise TokenEndpointError(
            f"the token endpoint{where} answered with an expires_in that is not a number of "
            "seconds; check [qonic] token_url points at Qonic's token endpoint",
            error_code="invalid_response",
        )
    return number


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


_NOT_JSON = object()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP-date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT; a date without a zone cannot be trusted
        return None
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def parse_token_response(
    status: int,
    content_type: str | None,
    body: bytes,
    *,
    requested_scopes: Iterable[str],
    now: float,
    endpoint: str | None = None,
    redact: Iterable[str | None] = (),
    retry_after: str | None = None,
) -> TokenSet:
    """Turn a token endpoint answer into a TokenSet or one clear TokenEndpointError.

    Tolerant of Qonic's camelCase variants; strict about everything that would make the token
    unusable. `redact` lists values we sent (code, verifier, secret, refresh token) that must not
    reach the message even if the server echoes them. `retry_after` is the raw Retry-After
    header; an error carries it in seconds (see TokenEndpointError.transient).
    """
    where = f" at {endpoint}" if endpoint else ""
    secrets = tuple(redact)

    def fail(message: str, code: str | None) -> TokenEndpointError:
        return TokenEndpointError(redact_secrets(message, secrets), error_code=code, status=status,
                                  retry_after=parse_retry_after(retry_after, now))

    if len(body) > MAX_TOKEN_RESPONSE:
        raise fail(
            f"the token endpoint{where} answered with more than {MAX_TOKEN_RESPONSE} bytes, "
            "which is not a token response; check [qonic] token_url",
            "too_large",
        )
    data: object
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = _NOT_JSON

    if status >= 300 or (isinstance(data, dict) and isinstance(data.get("error"), str)):
        if data is _NOT_JSON:
            kind = clean(content_type or "no content type", 60)
            raise fail(
                f"the token endpoint{where} answered HTTP {status} with a body that is not JSON "
                f"({kind}); {advice(None, status)}",
                "http_error",
            )
        code, description = server_error(data)
        said = ": ".join(part for part in (code, description) if part) or "no error description"
        raise fail(
            f"the token endpoint{where} refused the request (HTTP {status}, {said}); "
            f"{advice(code, status)}",
            code or "http_error",
        )
    if data is _NOT_JSON or not isinstance(data, dict):
        kind = clean(content_type or "no content type", 60)
        raise fail(
            f"the token endpoint{where} answered HTTP {status} with something other than a JSON "
            f"object ({kind}); check [qonic] token_url points at Qonic's token endpoint",
            "invalid_response",
        )

    access = _first(data, "access_token", "accessToken")
    if not isinstance(access, str) or not access:
        raise fail(
            f"the token endpoint{where} answered without an access token; check [qonic] "
            "token_url points at Qonic's token endpoint",
            "missing_access_token",
        )
    token_type = _first(data, "token_type", "tokenType")
    if token_type is None:
        token_type = BEARER  # RFC 6749 requires it, but the value is all we can use anyway
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        shown = clean(token_type, 40) if isinstance(token_type, str) else "not a string"
        raise fail(
            f"the token endpoint{where} issued a token of type '{shown}', but only Bearer tokens "
            "can be used; check [qonic] token_url",
            "unsupported_token_type",
        )
    refresh = _first(data, "refresh_token", "refreshToken")
    if refresh is not None and not isinstance(refresh, str):
        raise fail(
            f"the token endpoint{where} answered with a refresh token that is not a string; "
            "check [qonic] token_url points at Qonic's token endpoint",
            "invalid_response",
        )
    expires_in = _first(data, "expires_in", "expiresIn")
    if expires_in is not None:
        expires_at: float | None = now + _expires_in(expires_in, where)
    else:
        expires_at = jwt_exp(access)
    scope = data.get("scope")
    if isinstance(scope, str) and scope.strip():
        scopes = tuple(scope.split())
    elif isinstance(scope, list) and scope and all(isinstance(s, str) for s in scope):
        scopes = tuple(scope)
    else:
        scopes = tuple(requested_scopes)
    return TokenSet(
        access_token=access,
        refresh_token=refresh or None,
        expires_at=expires_at,
        scopes=scopes,
        token_type=BEARER,
        obtained_at=now,
    )

