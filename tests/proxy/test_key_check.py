"""The client-key check on our listeners, and its per-connection memory."""

from __future__ import annotations

import base64
import gc

from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from qonic_proxy.proxy.key_check import Credentials, KeyCheck

KEY = "k" * 32


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"qonic:{password}".encode()).decode()


def test_a_keyed_connect_is_forgotten_when_its_connection_is_gone():
    check = KeyCheck(KEY)
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT"))
    flow.request.headers["Proxy-Authorization"] = _basic(KEY)
    assert check.connect(flow)
    assert len(check.keyed) == 1 and flow.client_conn in check.keyed
    del flow
    gc.collect()
    assert len(check.keyed) == 0  # died with the connection: nothing to clean on disconnect


def test_a_connect_without_the_key_is_not_remembered():
    check = KeyCheck(KEY)
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT"))
    flow.request.headers["Proxy-Authorization"] = _basic("wrong")
    assert not check.connect(flow) and len(check.keyed) == 0


def test_requests_inside_a_keyed_tunnel_need_no_key_again():
    check = KeyCheck(KEY)
    connect = tflow.tflow(req=tutils.treq(method=b"CONNECT"))
    connect.request.headers["Proxy-Authorization"] = f"Bearer {KEY}"
    assert check.connect(connect)
    inner = tflow.tflow(client_conn=connect.client_conn)
    inner.client_conn.proxy_mode = ProxyMode.parse("regular")
    assert check.presented(inner, Credentials(None, None))
    other = tflow.tflow()
    other.client_conn.proxy_mode = ProxyMode.parse("regular")
    assert not check.presented(other, Credentials(None, None))
    assert check.presented(other, Credentials(_basic(KEY), None))


def test_reverse_listener_takes_the_header_or_basic_and_strips_basic():
    check = KeyCheck(KEY)
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:https://api.qonic.com")
    assert check.presented(flow, Credentials(None, KEY))
    flow.request.headers["Authorization"] = _basic(KEY)
    assert check.presented(flow, Credentials(None, None))
    assert "authorization" not in flow.request.headers


def test_credentials_are_taken_out_of_the_request():
    request = tutils.treq()
    request.headers["Proxy-Authorization"] = "Bearer x"
    request.headers["X-Qonic-Proxy-Key"] = "y"
    assert Credentials.take(request) == Credentials("Bearer x", "y")
    assert "proxy-authorization" not in request.headers
    assert "x-qonic-proxy-key" not in request.headers
