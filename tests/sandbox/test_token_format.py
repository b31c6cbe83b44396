"""Token response styles: camelCase fields, Qonic-style errors, JWT access tokens."""

from __future__ import annotations

import base64
import json
import re
import time


def test_camel_style_and_qonic_errors(make_client) -> None:
    c = make_client(token_style="camel", error_style="qonic")
    tokens = c.login()
    assert set(tokens) == {"accessToken", "tokenType", "expiresIn", "refreshToken", "scope"}
    assert c.api("/v1/projects", tokens["accessToken"]).status_code == 200
    r = c.refresh(tokens["refreshToken"])
    assert r.status_code == 200 and "refreshToken" in r.json()
    r = c.refresh(tokens["refreshToken"])
    assert r.status_code == 400
    assert set(r.json()) == {"errorDetails"} and "invalid_grant" in r.json()["errorDetails"]


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_jwt_style_tokens_carry_exp(make_client) -> None:
    c = make_client(omit_expires_in=True, access_token_lifetime=120)
    before = time.time()
    tokens = c.login()
    assert "expires_in" not in tokens
    parts = tokens["access_token"].split(".")
    assert len(parts) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in parts)
    assert json.loads(_b64decode(parts[0]))["alg"] == "HS256"
    claims = json.loads(_b64decode(parts[1]))
    assert before + 118 <= claims["exp"] <= time.time() + 121
    assert c.api("/v1/projects", tokens["access_token"]).status_code == 200
    # A JWT that looks right but was never issued is still rejected.
    tail = "AA" if parts[2][-2:] != "AA" else "BB"
    forged = ".".join([parts[0], parts[1], parts[2][:-2] + tail])
    assert c.api("/v1/projects", forged).status_code == 401
