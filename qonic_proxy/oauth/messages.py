"""The words of OAuth failures: server text made safe, secrets redacted, advice per error code.

Everything a token endpoint or a browser sends us ends up here before it reaches a log line, an
exception or a page, so the cleaning and the redaction happen in one place.
"""

from __future__ import annotations

import json
import unicodedata
import urllib.parse
from collections.abc import Iterable

from qonic_proxy.errors import TokenEndpointError


def clean(text: str, limit: int = 200) -> str:
    """Server text made safe for one log line/terminal: no control or format chars, bounded."""
    kept = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    kept = " ".join(kept.split())
    if len(kept) > limit:
        kept = kept[: limit - 1].rstrip() + "…"
    return kept


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Belt and braces: a server may echo what we sent; never let that reach a message."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, "[redacted]")
    return text


def advice(error_code: str | None, status: int) -> str:
    """What the user should do about a token endpoint refusal (RFC 6749 section 5.2 codes)."""
    if error_code == "invalid_client" or (error_code is None and status == 401):
        return "check [oauth] client_id and the client secret"
    if error_code == "invalid_grant":
        return "log in again with `qonic-proxy login`"
    if error_code == "invalid_scope":
        return "check [oauth] scopes (Qonic lists the valid ones at /v1/auth/scopes)"
    if error_code in ("unauthorized_client", "unsupported_grant_type"):
        return "check that the application registered with Qonic may use this grant type"
    if error_code == "invalid_request":
        return (
            "check that [oauth] redirect_uri matches the one registered with Qonic, "
            "then log in again with `qonic-proxy login`"
        )
    if error_code in ("temporarily_unavailable", "server_error") or status >= 500:
        return "try again later"
    return "check the [oauth] settings and log in again with `qonic-proxy login`"


def _describe_details(details: object) -> str:
    """Qonic's `errorDetails` has no documented shape: render str, dict or list readably."""
    if isinstance(details, str):
        return details
    if isinstance(details, dict):
        for key in ("message", "description", "detail", "title", "error"):
            value = details.get(key)
            if isinstance(value, str) and value:
                return value
        return json.dumps(details, ensure_ascii=False, separators=(",", ":"))[:400]
    if isinstance(details, list):
        return "; ".join(_describe_details(item) for item in details[:10])
    return json.dumps(details)[:400] if details is not None else ""


def server_error(data: object) -> tuple[str | None, str]:
    """(error code, description) from an RFC 6749 or Qonic error body; (None, "") when absent."""
    if not isinstance(data, dict):
        return None, ""
    code = data.get("error")
    description = data.get("error_description")
    if description is None:
        description = data.get("errorDescription")
    parts: list[str] = []
    if isinstance(description, str) and description:
        parts.append(description)
    if "errorDetails" in data:
        parts.append(_describe_details(data["errorDetails"]))
    if not isinstance(code, str) or not code:
        code = None
        # Some servers put a problem-details title/detail instead of an OAuth error code.
        for key in ("title", "detail", "message"):
            value = data.get(key)
            if isinstance(value, str) and value and not parts:
                parts.append(value)
    return (clean(code, 60) if code else None), clean(" ".join(parts))


def network_error(exc: BaseException, url: str, timeout: float) -> TokenEndpointError:
    """One sentence per way a connection to the token endpoint can fail, with where to look."""
    import http.client  # these three only once something failed
    import socket
    import ssl

    if isinstance(exc, TimeoutError):
        return TokenEndpointError(
            f"the token endpoint at {url} did not answer within {timeout:g} s; check [qonic] "
            "token_url and your network",
            error_code="timeout",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = clean(getattr(exc, "verify_message", None) or str(exc), 120)
        return TokenEndpointError(
            f"the TLS certificate of the token endpoint at {url} could not be verified ({why}); "
            "if it is signed by a private or corporate CA, set [qonic] ca_file to that CA's PEM "
            "file",
            error_code="tls_verify",
        )
    if isinstance(exc, ssl.SSLError):
        why = clean(getattr(exc, "reason", None) or str(exc), 120)
        return TokenEndpointError(
            f"the TLS handshake with the token endpoint at {url} failed ({why}); check [qonic] "
            "token_url (https on a TLS port) and [qonic] ca_file",
            error_code="tls",
        )
    if isinstance(exc, ConnectionRefusedError):
        return TokenEndpointError(
            f"the token endpoint at {url} refused the connection (nothing listening); check "
            "[qonic] token_url and that the service is up",
            error_code="connection_refused",
        )
    if isinstance(exc, socket.gaierror):
        host = urllib.parse.urlsplit(url).hostname
        return TokenEndpointError(
            f"the host name {host} of the token endpoint could not be resolved; check [qonic] "
            "token_url and your DNS or network",
            error_code="dns",
        )
    if isinstance(exc, ConnectionError | http.client.HTTPException):
        return TokenEndpointError(
            f"the token endpoint at {url} closed the connection or sent an invalid HTTP "
            "response; check [qonic] token_url and try again",
            error_code="network",
        )
    why = clean(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__, 120)
    return TokenEndpointError(
        f"the token endpoint at {url} could not be reached ({why}); check [qonic] token_url "
        "and your network",
        error_code="network",
    )


def refusal_message(error: str, description: str | None) -> str:
    """The LoginError text when Qonic sent the browser back with an error instead of a code."""
    said = f"{error}: {description}" if description else error
    if error == "access_denied":
        todo = "run `qonic-proxy login` again and approve the access"
    else:
        todo = (
            "check [oauth] client_id, scopes and redirect_uri against the application registered "
            "with Qonic, then run `qonic-proxy login` again"
        )
    return f"Qonic refused the login: {said}; {todo}"


_REASON_WORDS = {
    "timeout": "no answer in time",
    "connection_refused": "connection refused",
    "dns": "its host name does not resolve",
    "network": "a network error",
    "tls": "the TLS handshake failed",
    "tls_verify": "its TLS certificate could not be verified",
}


def describe_reason(reason: str) -> str:
    """A few words for a failure label (`http_503`, `timeout`…), for status lines and answers."""
    if reason.startswith("http_") and reason[5:].isdigit():
        return f"HTTP {reason[5:]}"
    return _REASON_WORDS.get(reason, reason.replace("_", " "))
