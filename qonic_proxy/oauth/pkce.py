"""PKCE (RFC 7636) and the anti-CSRF `state`: the random values of one browser login.

Kept apart from the OAuth client so the arithmetic can be checked against the RFC test vector
without any network code around it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string

# RFC 7636 section 4.1: code-verifier = 43*128unreserved, unreserved = ALPHA / DIGIT / "-" / "." /
# "_" / "~".
_UNRESERVED = string.ascii_letters + string.digits + "-._~"
MIN_VERIFIER_LENGTH = 43
MAX_VERIFIER_LENGTH = 128


def new_code_verifier(length: int = 64) -> str:
    """A fresh code verifier drawn uniformly from the unreserved set with `secrets`.

    64 characters give ~380 bits, far above the RFC's 256-bit recommendation.
    """
    if not MIN_VERIFIER_LENGTH <= length <= MAX_VERIFIER_LENGTH:
        raise ValueError(
            f"a PKCE code verifier must be {MIN_VERIFIER_LENGTH} to {MAX_VERIFIER_LENGTH} "
            f"characters long, not {length}"
        )
    return "".join(secrets.choice(_UNRESERVED) for _ in range(length))


def code_challenge_s256(verifier: str) -> str:
    """base64url(SHA-256(ASCII(verifier))) without '=' padding (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable `state` value (256 bits, URL-safe) that ties the callback to this login."""
    return secrets.token_urlsafe(32)
