"""The Sandbox object: plain-HTTP mode and the loopback-only rule."""

from __future__ import annotations

import pytest

from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.settings import SandboxSettings


def test_plain_http_mode(make_client) -> None:
    c = make_client(tls=False)
    assert c.sb.url.startswith("http://127.0.0.1:") and c.sb.ca_file is None
    assert c.get("/v1/auth/scopes").status_code == 200


def test_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ValueError):
        Sandbox(SandboxSettings(host="0.0.0.0"))  # noqa: S104 (that is the point)
