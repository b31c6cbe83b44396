"""How one sandbox behaves (SandboxSettings) and the shape of its request counters.

Why apart: the grant logic, the routes and the CLI all read the settings; none of them should
need the HTTP server to know what a switch means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qonic_proxy.hosts import is_loopback_host
from qonic_proxy.qonic import DEFAULT_REDIRECT_URI
from qonic_proxy.sandbox.faults import TokenFault

TOKEN_STYLES = ("snake", "camel")  # access_token / accessToken in token responses
ERROR_STYLES = ("rfc6749", "qonic")  # {"error", "error_description"} / {"errorDetails"}


@dataclass
class SandboxSettings:
    """How the sandbox behaves; the defaults are the strict, common case."""

    host: str = "127.0.0.1"
    port: int = 0
    client_id: str = "sandbox-client"
    client_secret: str | None = field(default="sandbox-secret", repr=False)
    redirect_uris: tuple[str, ...] = (DEFAULT_REDIRECT_URI,)
    auto_consent: bool = False
    access_token_lifetime: float = 3600
    issue_refresh_tokens: bool = True
    rotate_refresh_tokens: bool = True
    code_lifetime: float = 60
    token_style: str = "snake"  # noqa: S105 (a style name, not a secret)
    omit_expires_in: bool = False
    error_style: str = "rfc6749"
    tls: bool = True
    cert_dir: Path | None = None
    export_redirect_url: str | None = None
    verbose: bool = False
    refresh_delay: float = 0.0  # seconds a refresh_token grant takes (a far-away token endpoint)
    token_fault: TokenFault | None = None  # switched on when the sandbox starts (faults.py)


def check_settings(settings: SandboxSettings) -> None:
    """Refuse settings the sandbox cannot honour (ValueError with one sentence)."""
    if not is_loopback_host(settings.host):
        raise ValueError(
            f"The sandbox listens on loopback only (its test controls have no auth); "
            f"got host {settings.host!r}."
        )
    if settings.token_style not in TOKEN_STYLES:
        raise ValueError("token_style must be 'snake' or 'camel'.")
    if settings.error_style not in ERROR_STYLES:
        raise ValueError("error_style must be 'rfc6749' or 'qonic'.")


def new_stats() -> dict[str, Any]:
    """Fresh request counters: what `/-/sandbox/stats` and `Sandbox.stats()` report."""
    return {
        "authorize": 0,
        "consent": 0,
        "token": {
            "authorization_code": {"ok": 0, "error": 0},
            "refresh_token": {"ok": 0, "error": 0},
        },
        "api": {"ok": 0, "unauthorized": 0, "forbidden": 0},
        "authorization_headers_seen": 0,
        "refresh_token_reused": 0,  # a rotated refresh token presented again (grant revoked)
    }
