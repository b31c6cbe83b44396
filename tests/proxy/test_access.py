"""The addon's [access] checks: identified once per connection, refused before anything else."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from qonic_proxy.access.audit import AuditLog
from qonic_proxy.access.policy import Policy
from qonic_proxy.access.rules import Rule, RuleSet
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
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: calls.append(a) or OWNER)
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
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: STRANGER)
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
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: uid)
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
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: READER)
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
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: None)
    hold(rig, token("a0"))
    addon = make_addon(rig)
    flow = api_flow(b"POST")
    addon.client_connected(flow.client_conn)
    decide(addon, flow)
    assert flow.response is None  # no key configured: served as without access control


# ----- rule sets, minted keys and the /-/keys endpoint ---------------------------------------
REPORTER = 4000
QUERY = "/v1/projects/p1/models/m1/products/query"


def rules_addon(rig: Rig, audit: AuditLog | None = None) -> QonicAddon:
    addon = make_addon(rig)
    rules = RuleSet("reporter", (Rule.parse("GET /v1/**"), Rule.parse(f"POST {QUERY}")))
    assert addon.peer_check is not None
    addon.peer_check.policy.rules = {REPORTER: rules}
    addon.audit = audit
    return addon


def reverse_flow(method: bytes = b"GET", path: str = "/v1/projects",
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> http.HTTPFlow:
    flow = tflow.tflow(req=tutils.treq(method=method, scheme="https", host="api.qonic.com",
                                       port=443, authority=b"", path=path.encode(),
                                       headers=[(b"host", b"127.0.0.1:8080"), *headers]))
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:https://api.qonic.com")
    flow.client_conn.peername = ("127.0.0.1", 40001)
    flow.client_conn.sockname = ("127.0.0.1", 8080)
    return flow


RUNNER = asyncio.Runner()  # one loop: minted keys watch their process on it


def sent(addon: QonicAddon, flow: http.HTTPFlow) -> tuple[int | None, dict[str, object]]:
    addon.client_connected(flow.client_conn)
    RUNNER.run(addon.requestheaders(flow))
    if flow.response is not None:
        RUNNER.run(addon.response(flow))  # as mitmproxy does for a local answer: audited
    if flow.response is None:
        assert flow.request.headers.get("authorization") == "Bearer a0"
        return None, {}
    assert flow.request.headers.get("authorization") is None  # nothing went upstream with it
    return flow.response.status_code, json.loads(flow.response.content or b"{}")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize(("method", "path", "refused"), [
    (b"GET", "/v1/projects", False),
    (b"POST", QUERY, False),
    (b"POST", QUERY + "?x=1", False),
    (b"POST", "/v1/projects/p1/models/m1/products", True),
    (b"DELETE", "/v1/projects/p1", True),
    (b"POST", "/v1/projects/p1/models/m1/products/..%2Fdelete%2Fquery", True),
    (b"POST", "/v1/projects/p1/models/m1/products/%2e%2e/x/query", True),
])
def test_an_account_with_rules_may_send_only_what_they_match(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, mode: str, method: bytes, path: str,
        refused: bool) -> None:
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: REPORTER)
    hold(rig, token("a0"))
    addon = rules_addon(rig)
    if mode == "reverse":
        flow = reverse_flow(method, path)
    else:
        flow = api_flow(method)
        flow.request.path = path
    status, body = sent(addon, flow)
    if refused:
        assert status == 403 and body["error"] == "rule_refused"
        assert "'reporter'" in str(body["message"]) and "[access.rules]" in str(body["message"])
    else:
        assert status is None


def test_an_account_with_rules_only_reads_our_endpoints(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: REPORTER)
    addon = rules_addon(rig)
    status, body = sent(addon, reverse_flow(b"POST", "/-/login/paste"))
    assert status == 403 and body["error"] == "read_only"
    flow = reverse_flow(b"GET", "/-/metrics")
    addon.client_connected(flow.client_conn)
    decide(addon, flow)
    assert flow.response is not None and flow.response.status_code == 200


def mint(addon: QonicAddon, read_only: bool = False, pid: int | None = None,
         ) -> tuple[int | None, dict[str, object]]:
    headers = ((b"x-qonic-proxy-pid", str(pid or os.getpid()).encode()),
               (b"x-qonic-proxy-read-only", b"1" if read_only else b"0"))
    return sent(addon, reverse_flow(b"POST", "/-/keys", headers))


def proxy_basic(key: str) -> tuple[bytes, bytes]:
    return b"proxy-authorization", b"Basic " + base64.b64encode(f"qonic:{key}".encode())


def test_a_read_only_minted_key_narrows_its_owner_in_both_modes(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: os.geteuid())
    hold(rig, token("a0"))
    audit = AuditLog(tmp_path / "audit.jsonl")
    addon = rules_addon(rig, audit)
    addon.peer_check.policy.owner = os.geteuid()  # type: ignore[union-attr]

    status, body = mint(addon, read_only=True)
    assert status == 201 and body["read_only"] is True
    key = str(body["key"])
    reverse = reverse_flow(b"POST", "/v1/echo", ((b"x-qonic-proxy-key", key.encode()),))
    assert sent(addon, reverse)[0] == 403
    assert sent(addon, reverse_flow(b"GET", "/v1/echo",
                                    ((b"x-qonic-proxy-key", key.encode()),)))[0] is None
    connect = api_flow(b"CONNECT")
    connect.request.headers.add(*[h.decode() for h in proxy_basic(key)])
    addon.client_connected(connect.client_conn)
    addon.http_connect(connect)
    assert connect.response is None  # the tunnel opens, keyed with the read-only key
    inside = api_flow(b"POST")
    inside.client_conn = connect.client_conn
    status, refusal = sent(addon, inside)
    assert status == 403 and refusal["error"] == "read_only"
    assert "read-only key" in str(refusal["message"])
    assert addon.key_check.minted.revoke(str(body["key_id"]))
    after = api_flow(b"GET")
    after.client_conn = connect.client_conn
    assert sent(addon, after)[0] == 407  # revoked: the tunnel's key is dead
    lines = [json.loads(line) for line in audit.path.read_text().splitlines()]
    assert {line["key_id"] for line in lines if line["reason"] == "read_only"} == {
        body["key_id"]}
    assert key not in audit.path.read_text() and key.split(".")[2] not in audit.path.read_text()


def test_a_minted_key_works_only_for_its_account_and_while_live(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = [os.geteuid()]
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: uid[0])
    hold(rig, token("a0"))
    addon = rules_addon(rig)
    addon.peer_check.policy.users = frozenset({STRANGER})  # type: ignore[union-attr]

    status, body = mint(addon)
    assert status == 201 and body["read_only"] is False
    header = ((b"x-qonic-proxy-key", str(body["key"]).encode()),)
    uid[0] = STRANGER  # another admitted account that learnt the key
    status, refusal = sent(addon, reverse_flow(b"GET", "/v1/echo", header))
    assert status == 403 and refusal["error"] == "key_not_yours"
    uid[0] = os.geteuid()
    assert sent(addon, reverse_flow(b"GET", "/v1/echo", header))[0] is None
    addon.key_check.minted.revoke(str(body["key_id"]))
    assert sent(addon, reverse_flow(b"GET", "/v1/echo", header))[0] == 401


def test_only_identified_accounts_or_configured_key_holders_mint(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    uid: list[int | None] = [None]
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: uid[0])
    addon = rules_addon(rig)

    status, body = mint(addon)
    assert status == 403 and body["error"] == "keys_not_allowed"
    uid[0] = REPORTER  # rules and read-only accounts may mint (at most their rights)
    status, body = mint(addon)
    assert status == 403 and "your own" in str(body["message"])  # our pid is not theirs
    uid[0] = READER  # a same-site browser request (the guard lets it by) is refused too
    flow = reverse_flow(b"POST", "/-/keys", ((b"sec-fetch-site", b"same-origin"),
                                             (b"x-qonic-proxy-pid", b"1")))
    status, body = sent(addon, flow)
    assert status == 403 and body["error"] == "not_for_browsers"


def test_a_configured_key_holder_mints_and_revokes(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_check, "raw_peer_uid", lambda *a: None)
    addon = rules_addon(rig)
    addon.key_check.key = "c" * 32

    assert mint(addon)[0] == 401  # the configured key is required first
    flow = reverse_flow(b"POST", "/-/keys", ((b"x-qonic-proxy-key", b"c" * 32),
                                             (b"x-qonic-proxy-pid", str(os.getpid()).encode())))
    status, body = sent(addon, flow)
    assert status == 201 and body["key"] != "c" * 32
    grant = addon.key_check.minted.get(str(body["key_id"]))
    assert grant is not None and grant.uid is None
    revoke = reverse_flow(b"DELETE", f"/-/keys/{body['key_id']}",
                          ((b"x-qonic-proxy-key", b"c" * 32),))
    assert sent(addon, revoke)[0] == 200 and grant.revoked
