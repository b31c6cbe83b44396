"""Tests for qonic_proxy.oauth.tunnel: what a failing upstream proxy is reported as."""

from __future__ import annotations

import pytest

from qonic_proxy.config.model import UpstreamProxy
from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.oauth.transport import post_form
from qonic_proxy.oauth.tunnel import proxy_problem
from qonic_proxy.ports import free_port

VIA = UpstreamProxy("127.0.0.1", 3128, "alice", "pw-never-shown")


@pytest.mark.parametrize("status", ["401", "407"])
def test_refused_credentials_name_the_key(status: str) -> None:
    message = proxy_problem(OSError(f"Tunnel connection failed: {status} Denied"), VIA, "h:443")
    assert message == (f"the upstream proxy http://***@127.0.0.1:3128 refused the tunnel to "
                       f"h:443 (HTTP {status} Denied); check the user name and password in "
                       "[qonic] upstream_proxy")


def test_other_refusals_point_at_the_rules_and_the_target() -> None:
    message = proxy_problem(OSError("Tunnel connection failed: 403 Forbidden"), VIA, "h:443")
    assert "(HTTP 403 Forbidden)" in message and "that h:443 is up" in message


def test_an_unreachable_proxy_is_one_sentence_without_the_password() -> None:
    via = UpstreamProxy("127.0.0.1", free_port(), "alice", "pw-never-shown")
    with pytest.raises(TokenEndpointError) as info:
        post_form("https://127.0.0.1:9/v1/auth/token", {}, b"", ca_file=None, timeout=5,
                  limit=100, via=via)
    message = str(info.value)
    assert message.startswith(f"the upstream proxy http://***@127.0.0.1:{via.port} could not be "
                              "reached (connection refused)")
    assert "pw-never-shown" not in message and info.value.transient
