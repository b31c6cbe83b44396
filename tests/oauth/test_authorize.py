"""The authorize URL: the RFC 6749 / PKCE fields, and no secret in it."""

from __future__ import annotations

import urllib.parse

from qonic_proxy.oauth import authorize as oauth
from tests.oauth.support import SECRET, make_cfg


def test_authorize_url_fields() -> None:
    cfg = make_cfg()
    url = oauth.build_authorize_url(cfg, code_challenge="CHALLENGE", state="STATE")
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "api.qonic.com",
        "/v1/auth/authorize",
    )
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    assert query == {
        "client_id": ["my-client"],
        "redirect_uri": ["http://localhost:8765/callback"],
        "response_type": ["code"],
        "scope": ["projects:read models:read"],
        "state": ["STATE"],
        "code_challenge": ["CHALLENGE"],
        "code_challenge_method": ["S256"],
    }
    assert SECRET not in url and "secret" not in url


def test_authorize_url_keeps_an_existing_query() -> None:
    cfg = make_cfg(authorize_url="https://auth.example/authorize?tenant=a")
    url = oauth.build_authorize_url(cfg, code_challenge="C", state="S")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["tenant"] == ["a"] and query["state"] == ["S"]
