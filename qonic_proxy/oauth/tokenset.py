"""The tokens one token response gave us: a plain value with its cache-file form, no I/O.

Kept apart from the HTTP code so the token store and the token service can use it without
pulling in a network client. The tokens never appear in a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from qonic_proxy.records import field, record

BEARER = "Bearer"  # the only token type we can use


def finite_float(value: object) -> float | None:
    """The value as a float when it is a real JSON number (not a bool, NaN or infinity)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@record
class TokenSet:
    """What one token response gave us. The tokens are kept out of repr so they never hit a log."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None  # epoch seconds; None = unknown (use until the API says 401)
    scopes: tuple[str, ...]
    token_type: str  # always "Bearer"
    obtained_at: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the cache file (it holds the tokens: the file must be 0600)."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "scopes": list(self.scopes),
            "token_type": self.token_type,
            "obtained_at": self.obtained_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenSet:
        """Rebuild from `to_json` output; ValueError (naming the field, not its value) otherwise."""
        if not isinstance(data, dict):
            raise ValueError("token data is not a JSON object")
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("access_token is missing or not a non-empty string")
        refresh = data.get("refresh_token")
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            raise ValueError("refresh_token is not a non-empty string or null")
        expires_at = finite_float(data.get("expires_at"))
        if expires_at is None and data.get("expires_at") is not None:
            raise ValueError("expires_at is not a number or null")
        scopes = data.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("scopes is not a list of strings")
        token_type = data.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise ValueError("token_type is not 'Bearer'")
        obtained_at = finite_float(data.get("obtained_at"))
        if obtained_at is None:
            raise ValueError("obtained_at is not a number")
        return cls(
            access_token=access,
            refresh_token=refresh,
            expires_at=expires_at,
            scopes=tuple(scopes),
            token_type=BEARER,
            obtained_at=obtained_at,
        )


def jwt_exp(token: str) -> float | None:
    """The `exp` claim when the access token is a JWT. Unverified: only a hint for refreshing."""
    pieces = token.split(".")
    if len(pieces) != 3:
        return None
    payload = pieces[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    exp = finite_float(claims.get("exp")) if isinstance(claims, dict) else None
    return exp if exp is not None and exp > 0 else None
