"""Facts about Qonic's API that the client, the config and the sandbox all rely on.

One place for them, so the sandbox cannot drift from what the proxy expects (see
docs in Qonic's developer portal: the paths, the scopes, the documented redirect URI).
"""

from __future__ import annotations

DEFAULT_API_URL = "https://api.qonic.com"
API_PREFIX = "/v1/"  # every Qonic API path starts with it
AUTHORIZE_PATH = "/v1/auth/authorize"
TOKEN_PATH = "/v1/auth/token"  # noqa: S105 - a URL path
CONSENT_PATH = "/v1/auth/consent"
SCOPES_PATH = "/v1/auth/scopes"
KNOWN_SCOPES = (
    "projects:read",
    "projects:write",
    "models:read",
    "models:write",
    "issues:read",
    "libraries:read",
    "libraries:write",
)
DEFAULT_SCOPES = ("projects:read", "models:read")
DEFAULT_REDIRECT_URI = "http://localhost:8765/callback"  # the one Qonic's docs register
