"""The authorization request (RFC 6749 section 4.1.1 with PKCE): the URL the browser is sent to.

Pure: it only builds a string from the config and this login's public values.
"""

from __future__ import annotations

import urllib.parse

from qonic_proxy.config.model import Config


def build_authorize_url(cfg: Config, *, code_challenge: str, state: str) -> str:
    """The URL the browser is sent to. It carries only public values: never the client secret."""
    params = [
        ("response_type", "code"),
        ("client_id", cfg.oauth.client_id),
        ("redirect_uri", cfg.oauth.redirect_uri),
    ]
    if cfg.oauth.scopes:
        params.append(("scope", " ".join(cfg.oauth.scopes)))
    params += [
        ("state", state),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ]
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    parts = urllib.parse.urlsplit(cfg.qonic.authorize_url)
    if parts.query:  # keep whatever the configured URL already carries
        query = f"{parts.query}&{query}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
