"""The unauthenticated test controls under /-/sandbox/."""

from __future__ import annotations

from tests.sandbox.helpers import (
    Client,
    assert_error,
)


def test_http_controls(client: Client) -> None:
    tokens = client.login()
    stats = client.get("/-/sandbox/stats").json()
    assert stats["token"]["authorization_code"]["ok"] == 1
    assert client.post("/-/sandbox/revoke?what=access").status_code == 200
    assert client.api("/v1/projects", tokens["access_token"]).status_code == 401
    assert client.post("/-/sandbox/revoke?what=everything").status_code == 400
    r = client.post("/-/sandbox/config", json={"access_token_lifetime": 42})
    assert r.status_code == 200
    r = client.refresh(tokens["refresh_token"])
    assert r.json()["expires_in"] == 42
    assert client.post("/-/sandbox/config", json={"nope": 1}).status_code == 400
    assert client.post("/-/sandbox/revoke?what=grants").status_code == 200
    assert_error(client.refresh(r.json()["refresh_token"]), 400, "invalid_grant")
