"""The token decision: which requests earn the token (routing) and which are refused."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from qonic_proxy.hosts import Origin
from qonic_proxy.metrics import Metrics
from qonic_proxy.proxy import mitm_patches, routing
from qonic_proxy.proxy.addon import Guard, ListenerInfo, QonicAddon
from qonic_proxy.proxy.responses import Refusal


def _decide(host: str, *, scheme: str = "https", port: int = 443, mode: str = "regular",
            ) -> tuple[str | None, int | None]:
    """Run the addon's request hook in-process on a synthetic flow: (Authorization, status)."""

    class Tokens:
        login_pending = False

        async def get_access_token(self) -> str:
            return "the-token"

        def offer_login(self) -> None:
            pass

        def what_to_do(self) -> str:
            return ""

    listeners = ListenerInfo(reverse_port=8080, forward_port=8081)
    addon = QonicAddon(
        api_origin=Origin.parse("https://api.qonic.com"),
        tokens=Tokens(),  # type: ignore[arg-type]
        metrics=Metrics(lambda: None), listeners=listeners,
        upstream_tls=ssl.create_default_context(),
        guard=Guard(allowed_hosts=frozenset({"localhost", "127.0.0.1"}), listeners=listeners),
    )
    flow = tflow.tflow(req=tutils.treq(scheme=scheme, host=host, port=port, authority=b"",
                                       headers=[(b"host", host.encode("idna"))]))
    flow.client_conn.proxy_mode = ProxyMode.parse(mode)
    asyncio.run(addon.requestheaders(flow))
    status = flow.response.status_code if flow.response is not None else None
    return flow.request.headers.get("authorization"), status


@pytest.mark.parametrize(("host", "port", "scheme", "earns"), [
    ("api.qonic.com", 443, "https", True),
    ("API.Qonic.COM", 443, "https", True),
    ("api.qonic.com.", 443, "https", True),
    ("api.qonic.com.evil", 443, "https", False),
    ("evilapi.qonic.com", 443, "https", False),
    ("api.qonic.com.evil.example", 443, "https", False),
    ("qonic.com", 443, "https", False),
    ("api.qonic.com", 8443, "https", False),
    ("api.qonіc.com", 443, "https", False),  # Cyrillic i: a different IDNA name
    ("xn--api-qonic-com", 443, "https", False),
])
def test_origin_comparison_is_exact(host: str, port: int, scheme: str, earns: bool):
    authorization, _ = _decide(host, port=port, scheme=scheme)
    assert (authorization == "Bearer the-token") is earns


def test_idna_names_compare_in_their_ascii_form():
    assert Origin.parse("https://bücher.example").host == "xn--bcher-kva.example"
    assert Origin.parse("https://BÜCHER.example.").host == "xn--bcher-kva.example"


def test_plain_http_to_the_api_name_is_refused_in_process():
    authorization, status = _decide("api.qonic.com", scheme="http", port=80)
    assert authorization is None and status == 403



def _flow(host: str, *, scheme: str = "https", port: int = 443, mode: str = "regular",
          path: str = "/v1/projects", origin_form: bool = False) -> Any:
    flow = tflow.tflow(req=tutils.treq(scheme=scheme, host=host, port=port, authority=b"",
                                       path=path.encode(),
                                       headers=[(b"host", host.encode("idna"))]))
    flow.client_conn.proxy_mode = ProxyMode.parse(mode)
    if origin_form:
        mitm_patches._non_proxy_requests.add(flow.request)
    return flow


API = Origin.parse("https://api.qonic.com")
LISTENERS = ListenerInfo(reverse_port=8080, forward_port=8081)
GUARD = Guard(allowed_hosts=frozenset({"localhost", "127.0.0.1"}), listeners=LISTENERS)


@pytest.mark.parametrize(("flow_args", "addressed"), [
    ({"host": "api.qonic.com", "mode": "reverse:https://api.qonic.com"}, True),
    ({"host": "127.0.0.1", "scheme": "http", "port": 8081}, True),  # a proxy request to us
    ({"host": "localhost", "scheme": "http", "port": 8080}, True),
    ({"host": "localhost", "scheme": "https", "port": 8080}, False),
    ({"host": "evil.example", "scheme": "http", "port": 8081}, False),
    ({"host": "evil.example", "scheme": "http", "port": 80, "origin_form": True}, True),
    ({"host": "api.qonic.com"}, False),
])
def test_addressed_to_us(flow_args: dict[str, Any], addressed: bool):
    assert routing.addressed_to_us(_flow(**flow_args), GUARD, LISTENERS) is addressed


@pytest.mark.parametrize(("flow_args", "addressed", "expected"), [
    ({"host": "api.qonic.com"}, False, routing.Route.API),
    ({"host": "other.example"}, False, routing.Route.ELSEWHERE),
    ({"host": "api.qonic.com", "port": 8443}, False, routing.Route.ELSEWHERE),
    ({"host": "api.qonic.com", "mode": "reverse:https://api.qonic.com", "path": "/-/health"},
     True, routing.Route.ENDPOINT),
    ({"host": "api.qonic.com", "mode": "reverse:https://api.qonic.com"}, True, routing.Route.API),
    ({"host": "127.0.0.1", "scheme": "http", "port": 8081}, True,
     routing.FORWARD_PORT_NOT_A_SERVER),
    ({"host": "api.qonic.com", "path": "/-/health"}, False, routing.Route.API),  # not ours
])
def test_route(flow_args: dict[str, Any], addressed: bool, expected: object):
    assert routing.route(_flow(**flow_args), addressed=addressed, api_origin=API) == expected


def test_route_refuses_plain_http_to_the_api_host():
    refusal = routing.route(_flow("api.qonic.com", scheme="http", port=80), addressed=False,
                            api_origin=API)
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.error) == (
        403, "plain_http_refused")
