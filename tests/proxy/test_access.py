"""The addon's [access] checks: identified once per connection, refused before anything else."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from qonic_proxy.access.policy import Policy
from qonic_proxy.hosts import Origin
from qonic_proxy.proxy import key_check
from qonic_proxy.proxy.addon import Guard, ListenerInfo, QonicAddon
from tests.tokens import test_service
from tests.tokens.test_service import Rig, hold, token

rig = test_service.rig
OWNER, STRANGER, READER = 1000, 2000, 3000


def make_addon(rig: Rig) -> QonicAddon:
    listeners = ListenerInfo(reverse_port=8080, forward_port=8081)
    return QonicAddon(
        api_origin=Origin.parse("https://api.qonic.com"), tokens=rig.service,
        metrics=rig.metrics, listeners=listeners, upstream_tls=ssl.create_default_context(),
        guard=Guard(allowed_hosts=frozenset({"localhost", "127.0.0.1"}), listeners=listeners),
        access=Policy(read_only=frozenset({READER}), owner=OWNER), config_path="/etc/qp.toml",
    )


def api_flow(method: bytes = b"GET") -> http.HTTPFlow:
    flow = tflow.tflow(req=tutils.treq(method=method, scheme="https", host="api.qonic.com",
                                       port=443, authority=b"", path=b"/v1/projects?q=1",
                                       headers=[(b"host", b"api.qonic.com")]))
    flow.client_conn.proxy_mode = ProxyMode.parse("regular")
    flow.client_conn.peername = ("127.0.0.1", 40000)
    flow.client_conn.sockname = ("127.0.0.1", 8081)
    return flow


def decide(addon: QonicAddon, flow: http.HTTPFlow) -> None:
    asyncio.run(addon.requestheaders(flow))


def test_identified_once_per_connection_before_any_request(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(key_check, "peer_uid", lambda *a: calls.append(a) or OWNER)
    hold(rig, token("a0"))
    addon = make_addon(rig)
    flow = api_flow()
    addon.client_connected(flow.client_conn)
    assert calls == [(("127.0.0.1", 8081), ("127.0.0.1", 40000))]
    assert addon.peer_check is not None and flow.client_conn in addon.peer_check.peers
    for _ in range(3):  # keep-alive requests: no further lookup
        decide(addon, api_flow())
        again = api_flow()
        again.client_conn = flow.client_conn
        decide(addon, again)
        assert again.response is None  # served: the token path
    assert len(calls) == 1 + 3  # one per new connection only


def test_another_account_gets_a_403_naming_it_and_the_setting(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_check, "peer_uid", lambda *a: STRANGER)
    hold(rig, token("a0"))
    addon = make_addon(rig)
    flow = api_flow()
    addon.client_connected(flow.client_conn)
    decide(addon, flow)
    assert flow.response is not None and flow.response.status_code == 403
    body = json.loads(flow.response.content)
    assert body["error"] == "peer_not_allowed"
    assert "2000" in body["message"] and "[access] users" in body["message"]
    assert "authorization" not in flow.request.headers
    assert rig.metrics.rejected.get("peer_not_allowed") == 1


@pytest.mark.parametrize(("uid", "status"), [(STRANGER, 403), (READER, None)])
def test_connect_is_refused_to_other_accounts_and_opens_for_read_only_ones(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, uid: int, status: int | None) -> None:
    """A read-only account's tunnel opens: each request inside it is checked."""
    monkeypatch.setattr(key_check, "peer_uid", lambda *a: uid)
    addon = make_addon(rig)
    flow = api_flow(b"CONNECT")
    addon.client_connected(flow.client_conn)
    addon.http_connect(flow)
    assert (flow.response.status_code if flow.response else None) == status


@pytest.mark.parametrize(("method", "refused"), [(b"GET", False), (b"HEAD", False),
                                                 (b"OPTIONS", False), (b"POST", True),
                                                 (b"DELETE", True), (b"PATCH", True)])
def test_read_only_accounts_may_only_read(rig: Rig, monkeypatch: pytest.MonkeyPatch,
                                          method: bytes, refused: bool) -> None:
    monkeypatch.setattr(key_check, "peer_uid", lambda *a: READER)
    hold(rig, token("a0"))
    addon = make_addon(rig)
    flow = api_flow(method)
    addon.client_connected(flow.client_conn)
    decide(addon, flow)
    if refused:
        assert flow.response is not None and flow.response.status_code == 403
        assert json.loads(flow.response.content)["error"] == "read_only"
        assert "authorization" not in flow.request.headers
    else:
        assert flow.response is None and "authorization" in flow.request.headers


def test_an_unidentified_peer_is_left_to_the_client_key(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_check, "peer_uid", lambda *a: None)
    hold(rig, token("a0"))
    addon = make_addon(rig)
    flow = api_flow(b"POST")
    addon.client_connected(flow.client_conn)
    decide(addon, flow)
    assert flow.response is None  # no key configured: served as without access control
