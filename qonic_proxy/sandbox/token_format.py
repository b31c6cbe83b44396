"""What the sandbox's tokens look like: opaque or JWT, snake_case or camelCase responses.

Why apart: these are the look-alike switches (`token_style`, `omit_expires_in`) that mimic the
shapes a client may meet; the grant rules in `grants` do not depend on them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from qonic_proxy.sandbox.settings import SandboxSettings


def _segment(data: bytes) -> str:
    """One base64url part of a JWT (no padding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_access_token(
    settings: SandboxSettings, *, issuer: str, key: bytes, scope: str, lifetime: float
) -> str:
    """An opaque token, or (when expires_in is omitted) an HS256 JWT whose `exp` tells."""
    if not settings.omit_expires_in:
        return secrets.token_urlsafe(32)
    now = time.time()
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {
        "iss": issuer,
        "sub": "sandbox-user",
        "aud": settings.client_id,
        "iat": int(now),
        "exp": int(now + lifetime),
        "scope": scope,
        "jti": secrets.token_urlsafe(12),
    }
    signing_input = ".".join(
        _segment(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
    )
    sig = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _segment(sig)


def token_body(
    settings: SandboxSettings, *, access: str, refresh: str | None, scope: str, lifetime: float
) -> dict[str, Any]:
    """The token endpoint's JSON answer in the configured style."""
    camel = settings.token_style == "camel"  # noqa: S105
    body: dict[str, Any] = {
        ("accessToken" if camel else "access_token"): access,
        ("tokenType" if camel else "token_type"): "Bearer",
    }
    if not settings.omit_expires_in:
        body["expiresIn" if camel else "expires_in"] = int(lifetime)
    if refresh is not None:
        body["refreshToken" if camel else "refresh_token"] = refresh
    body["scope"] = scope
    return body
