"""Browser-attack defences: the Host and cross-site guard, and no CORS grant."""

from __future__ import annotations

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow

from qonic_proxy.proxy.flow_state import flow_state
from qonic_proxy.proxy.guard import Guard
from qonic_proxy.proxy.guard import strip_cors as _strip_cors
from qonic_proxy.proxy.listeners import ListenerInfo
from tests.proxy.lab import (
    no_cors,
)


def test_cors_headers_of_the_api_are_stripped_from_token_answers():
    """Whatever CORS policy the API has for its own web app, no page may read our answers."""
    flow = tflow.tflow(resp=True)
    flow.client_conn.proxy_mode = ProxyMode.parse("regular")
    flow_state(flow).token = "t"
    flow.response.headers["Access-Control-Allow-Origin"] = "*"
    flow.response.headers["access-control-allow-credentials"] = "true"
    flow.response.headers["Access-Control-Expose-Headers"] = "x"
    _strip_cors(flow)
    assert no_cors(dict(flow.response.headers))
    untouched = tflow.tflow(resp=True)  # a tunnelled/other host's answer: passes untouched
    untouched.client_conn.proxy_mode = ProxyMode.parse("regular")
    untouched.response.headers["Access-Control-Allow-Origin"] = "*"
    _strip_cors(untouched)
    assert untouched.response.headers["Access-Control-Allow-Origin"] == "*"




def _guard() -> Guard:
    return Guard(allowed_hosts=frozenset({"localhost", "127.0.0.1"}),
                 listeners=ListenerInfo(reverse_port=8080, forward_port=8081))


@pytest.mark.parametrize(("host", "allowed"), [
    ("localhost", True), ("LOCALHOST.", True), ("127.0.0.1:8080", True), ("localhost:1", True),
    ("evil.example", False), ("", False), (None, False), ("[::1]:8080", False),
    ("localhost.evil.example", False),
])
def test_host_allowed_compares_the_name_without_port(host: str | None, allowed: bool):
    assert _guard().host_allowed(host) is allowed


@pytest.mark.parametrize(("headers", "cross_site"), [
    ({}, False),
    ({"Sec-Fetch-Site": "none"}, False),
    ({"Sec-Fetch-Site": " Same-Origin "}, False),
    ({"Sec-Fetch-Site": "same-site"}, True),
    ({"Origin": "http://127.0.0.1:8080"}, False),
    ({"Origin": "http://localhost:8081"}, False),
    ({"Origin": "http://localhost:9999"}, True),  # not one of our ports
    ({"Origin": "https://127.0.0.1:8080"}, True),
    ({"Origin": "http://127.0.0.1:bad"}, True),
    ({"Origin": "null"}, True),
])
def test_cross_site_reason(headers: dict[str, str], cross_site: bool):
    from mitmproxy import http

    reason = _guard().cross_site_reason(http.Headers(**{k.replace("-", "_"): v
                                                        for k, v in headers.items()}))
    assert (reason is not None) is cross_site


def test_refusal_checks_the_host_only_for_requests_addressed_to_us():
    from mitmproxy.test import tutils

    request = tutils.treq(headers=[(b"host", b"evil.example")])
    refusal = _guard().refusal(request, addressed_to_us=True)
    assert refusal is not None and (refusal.status, refusal.error) == (403, "host_not_allowed")
    assert _guard().refusal(request, addressed_to_us=False) is None
    request.headers["Sec-Fetch-Site"] = "cross-site"
    refusal = _guard().refusal(request, addressed_to_us=False)
    assert refusal is not None and refusal.error == "cross_site"
