"""The addon's answer for an API request without a usable token, in-process (mitmproxy tflow).

A real TokenService (the fake clock and token endpoint of tests/tokens) behind a real addon:
during an outage the client gets 503 with Retry-After and no login is offered; a token that is
still valid is sent as usual.
"""

from __future__ import annotations

import asyncio
import json
import ssl

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.hosts import Origin
from qonic_proxy.proxy.addon import Guard, ListenerInfo, QonicAddon
from tests.tokens import test_service
from tests.tokens.test_service import NOW, Rig, hold, token

rig = test_service.rig


def api_request(rig: Rig) -> http.HTTPFlow:
    listeners = ListenerInfo(reverse_port=8080, forward_port=8081)
    addon = QonicAddon(
        api_origin=Origin.parse("https://api.qonic.com"), tokens=rig.service,
        metrics=rig.metrics, listeners=listeners, upstream_tls=ssl.create_default_context(),
        guard=Guard(allowed_hosts=frozenset({"localhost", "127.0.0.1"}), listeners=listeners),
    )
    flow = tflow.tflow(req=tutils.treq(scheme="https", host="api.qonic.com", port=443,
                                       authority=b"", path=b"/v1/projects",
                                       headers=[(b"host", b"api.qonic.com")]))
    flow.client_conn.proxy_mode = ProxyMode.parse("regular")

    async def decide() -> None:
        await addon.requestheaders(flow)

    asyncio.run(decide())
    return flow


def test_an_outage_with_an_expired_token_answers_503_with_retry_after(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = TokenEndpointError("down", status=503, retry_after=7)
    flow = api_request(rig)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["Retry-After"] == "7"
    assert flow.response.headers["Content-Type"] == "application/json"
    assert json.loads(flow.response.content) == {
        "error": "token_endpoint_unavailable",
        "message": "Qonic's token endpoint is unavailable (HTTP 503); qonic-proxy keeps the "
                   "login and retries in 7 s.",
        "retry_after": 7,
    }
    assert "authorization" not in flow.request.headers
    assert rig.offers == [] and rig.service.tokens is not None  # the login is kept
    rig.clock.now += 4.5
    again = api_request(rig)  # no new token request before the next attempt
    assert again.response.status_code == 503 and again.response.headers["Retry-After"] == "3"
    assert len(rig.endpoint.calls) == 1
    rig.clock.now += 3
    rig.endpoint.error = None
    served = api_request(rig)
    assert served.response is None and served.request.headers["authorization"] == "Bearer a2"


def test_an_outage_with_a_valid_token_serves_the_request(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 545  # due, still valid
    rig.endpoint.error = TokenEndpointError("down", error_code="timeout")
    flow = api_request(rig)
    assert flow.response is None and flow.request.headers["authorization"] == "Bearer a0"


def test_a_lost_grant_still_answers_login_required(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = TokenEndpointError("gone", status=400, error_code="invalid_grant")
    flow = api_request(rig)
    assert flow.response.status_code == 401
    assert json.loads(flow.response.content)["error"] == "login_required"
    assert rig.offers == [1]


def test_an_outage_answer_is_counted_under_its_own_reason(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = TokenEndpointError("down", status=503)
    api_request(rig)
    rendered = rig.metrics.render()
    assert 'reason="token_endpoint_unavailable"' in rendered
    assert 'reason="login_required"' not in rendered


def test_a_401_during_an_outage_gets_the_503_not_qonics_401(rig: Rig):
    from qonic_proxy.proxy.flow_state import flow_state
    from qonic_proxy.proxy.replay import after_unauthorized

    hold(rig, token("a0"))
    rig.clock.now = NOW + 30  # valid by its expiry, but Qonic says 401 to it
    rig.endpoint.error = TokenEndpointError("down", status=503, retry_after=5)
    flow = api_request(rig)
    assert flow.request.headers["authorization"] == "Bearer a0"
    flow.response = http.Response.make(401, b'{"error": "unauthorized"}')

    async def unauthorized() -> None:
        await after_unauthorized(flow, tokens=rig.service,
                                 api_origin=Origin.parse("https://api.qonic.com"),
                                 context=ssl.create_default_context(), metrics=rig.metrics)

    asyncio.run(unauthorized())
    assert flow_state(flow).retried
    assert flow.response.status_code == 503
    assert json.loads(flow.response.content)["error"] == "token_endpoint_unavailable"
    assert flow.response.headers["Retry-After"] == "5"
    assert rig.offers == [] and rig.service.tokens is not None  # the login is kept
