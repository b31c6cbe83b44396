"""/-/health and /-/metrics in-process: the shapes of an outage and of an unsaved cache."""

from __future__ import annotations

import asyncio
import errno
import json
from typing import Any

from mitmproxy import http
from mitmproxy.test import tutils

from qonic_proxy.errors import TokenEndpointError
from qonic_proxy.proxy.endpoints import Endpoints
from qonic_proxy.tokens.outage import OUTAGE_ACTION
from tests.tokens import test_service
from tests.tokens.test_service import NOW, Rig, hold, run, token

rig = test_service.rig


def get(rig: Rig, path: str) -> http.Response:
    endpoints = Endpoints(rig.service, rig.metrics)

    async def answer() -> http.Response:
        return await endpoints.answer(tutils.treq(path=path.encode(), method=b"GET"))

    return asyncio.run(answer())


def health(rig: Rig) -> tuple[int, dict[str, Any]]:
    response = get(rig, "/-/health")
    return response.status_code, json.loads(response.content)


def test_health_in_an_outage_with_an_expired_token_is_503_without_a_login(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 601
    rig.endpoint.error = TokenEndpointError("the token endpoint is down", status=502)
    assert run(rig.service.get_access_token) is None
    status, body = health(rig)
    assert status == 503
    assert body["status"] == "token_endpoint_unavailable" and body["logged_in"] is False
    assert body["last_error"] == "the token endpoint is down"
    assert body["next_attempt_in"] == 1 and body["action"] == OUTAGE_ACTION
    assert body["refresh_token"] is True and body["login_in_progress"] is False
    assert body["cache"] == {"path": str(rig.store.path), "saved": True, "error": None}
    metrics = get(rig, "/-/metrics").content.decode()
    assert 'qonic_proxy_token_refresh_failures_total{reason="http_502"} 1' in metrics


def test_health_with_a_valid_token_during_an_outage_is_200_and_says_refresh_fails(rig: Rig):
    hold(rig, token("a0"))
    rig.clock.now = NOW + 545
    rig.endpoint.error = TokenEndpointError("no answer", error_code="timeout")
    assert run(rig.service.get_access_token) == "a0"
    status, body = health(rig)
    assert status == 200 and body["status"] == "ok" and body["logged_in"] is True
    assert body["refresh_failing"] == {"last_error": "no answer", "next_attempt_in": 1}
    assert "action" not in body and "last_error" not in body


def test_health_always_has_the_cache_and_says_when_it_is_unsaved(rig: Rig):
    status, body = health(rig)
    assert status == 503 and body["status"] == "login_required"
    assert body["cache"] == {"path": str(rig.store.path), "saved": True, "error": None}
    hold(rig, token("a0"))
    rig.service._unsaved.hold(token("a1", at=NOW + 1), rig.store._write_error(
        OSError(errno.EROFS, "Read-only file system")))
    status, body = health(rig)
    assert status == 200 and body["cache"] == {
        "path": str(rig.store.path), "saved": False, "error": "Read-only file system"}
