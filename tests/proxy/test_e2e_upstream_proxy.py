"""End-to-end: `[qonic] upstream_proxy` through a real Debian proxy (tinyproxy, Basic auth).

Every outbound connection of the daemon must show up in tinyproxy's log as a CONNECT: the token
endpoint (the sandbox serves both, so its CONNECT is the one seen after the login and before any
API call), the API connections mitmproxy makes in both modes, the 401 replay, and forward-mode
passthroughs. The proxy's password must appear in none of our output.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    Bystander,
    DaemonProcess,
    World,
    curl,
    http_request,
    wait_for,
)
from tests.proxy.test_e2e_core import bystander  # noqa: F401 - the fixture
from tests.tinyproxy import Tinyproxy, start_tinyproxy

pytestmark = pytest.mark.e2e

USER = "proxyuser"
PASSWORD = "pr0xy-Pa55-" + "7f3a9c"


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    proxy = start_tinyproxy(tmp_path, user=USER, password=PASSWORD)
    try:
        yield proxy
    finally:
        proxy.stop()


def _through(world: World, proxy: Tinyproxy, password: str | None = None) -> str:
    """Point the config at the proxy; the sandbox's host:port (API and token endpoint)."""
    world.config["qonic"]["upstream_proxy"] = proxy.url(password)
    return world.sandbox.url.split("//", 1)[1]


def _assert_no_credentials(*texts: str) -> None:
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for text in texts:
        assert PASSWORD not in text
        assert encoded not in text


def test_everything_goes_through_the_upstream_proxy(
        world: World, daemons: list[DaemonProcess], tinyproxy: Tinyproxy,
        bystander: Bystander):  # noqa: F811 - the fixture imported above
    api = _through(world, tinyproxy)
    daemon = world.daemon()
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    assert tinyproxy.connects() == [api]  # the code exchange, before any API call

    status, _, body = http_request(daemon.reverse_url + "/v1/projects")
    assert status == 200, body
    assert api in tinyproxy.connects()  # reverse mode

    before = len(tinyproxy.connects())
    world.sandbox.revoke_access_tokens()  # the next call gets 401: refresh, then replay once
    status, _, body = http_request(daemon.reverse_url + "/v1/projects",
                                   headers={"Connection": "close"})
    assert status == 200, body
    assert world.sandbox.stats()["token"]["refresh_token"]["ok"] >= 1
    # mitmproxy's call (answered 401), the refresh, the replay: three tunnels
    assert tinyproxy.connects()[before:] == [api, api, api]

    before = len(tinyproxy.connects())
    forward = curl("-f", "--proxy", daemon.forward_url, "--cacert", str(world.proxy_ca),
                   world.sandbox.url + "/v1/projects")
    assert forward.returncode == 0, forward.stderr
    passthrough = curl("-f", "--proxy", daemon.forward_url, "--cacert", str(bystander.ca_file),
                       bystander.https + "/other")
    assert passthrough.returncode == 0, passthrough.stderr
    # (plain HTTP to the API host, 127.0.0.1 here, is refused: use a name)
    plain_url = bystander.plain.replace("127.0.0.1", "localhost")
    plain = curl("-f", "--proxy", daemon.forward_url, plain_url + "/plain")
    assert plain.returncode == 0, plain.stderr
    new = tinyproxy.connects()[before:]
    assert new == [api, bystander.https.split("//")[1], plain_url.split("//")[1]], new
    assert all("authorization" not in seen["headers"] for seen in bystander.seen)

    _, health = daemon.health()
    daemon.stop()
    _assert_no_credentials(daemon.stderr_path.read_text(), "".join(daemon.stdout),
                           json.dumps(health))


def test_a_wrong_proxy_password_is_one_sentence_without_it(
        world: World, daemons: list[DaemonProcess], tinyproxy: Tinyproxy):
    wrong = "wr0ng-" + PASSWORD[::-1]
    _through(world, tinyproxy, password=wrong)
    daemon = world.daemon()
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: world.browser_runs() == 1, 30, "the browser login")

    def failed() -> dict[str, object] | None:
        status, body = daemon.health()
        return body if status == 503 and "refused the tunnel" in json.dumps(body) else None

    health = wait_for(failed, 30, "the failed code exchange in /-/health")
    text = json.dumps(health)
    assert "upstream proxy http://***@127.0.0.1:" in text
    assert "check the user name and password in [qonic] upstream_proxy" in text
    status, _, body = http_request(daemon.reverse_url + "/v1/projects")
    assert status == 401
    daemon.stop()
    log = daemon.stderr_path.read_text()
    assert "refused the tunnel" in log
    for output in (log, text, body.decode()):
        assert wrong not in output
        assert base64.b64encode(f"{USER}:{wrong}".encode()).decode() not in output
