"""Qonic's own sample client, as it behaves on the wire, passes through untouched in both modes.

It sends `Authorization: Bearer None` when it skips its own login (ours replaces it), ties a
modification session together with `X-Client-Session-Id`, follows a `Location` that points at
another host, uploads to an `uploadUrl` on another host, and older versions call
`projects/{id}//publish`. The "API" here is a recording HTTPS server (the sandbox has no such
routes); the token comes from the shared world's login (same token endpoint, so same cache).
"""

from __future__ import annotations

import http.server
import json
import shutil
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context
from tests.wrap.exec_world import CLIENT_ID, World, free_port

API_HOST = "127.0.0.4"


class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]]
    other: str

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append({"path": self.path, "headers": dict(self.headers.items())})
        if "/export-ifc/" in self.path:
            self.send_response(303)
            self.send_header("Location", f"{self.other}/exports/op-1/result.ifc")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"uploadUrl": f"{self.other}/uploads/abc"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api(world: World, tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    tls = make_server_tls(tmp_path / "api-tls", ips=(API_HOST,))
    seen: list[dict[str, Any]] = []
    handler = type("Recorder", (Api,), {"seen": seen, "other": world.other.https})
    server = http.server.ThreadingHTTPServer((API_HOST, 0), handler)
    server.socket = server_ssl_context(tls).wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(tls.ca_file.read_bytes() + Path(str(world.sandbox.ca_file)).read_bytes())
    (tmp_path / "state").mkdir()
    shutil.copy(world.tmp / "state" / "token.json", tmp_path / "state" / "token.json")
    config = tmp_path / "config.toml"
    config.write_text(textwrap.dedent(f"""\
        [qonic]
        api_url = "https://{API_HOST}:{server.server_address[1]}"
        token_url = "{world.api}/v1/auth/token"
        authorize_url = "{world.api}/v1/auth/authorize"
        ca_file = "{trusted}"
        [oauth]
        client_id = "{CLIENT_ID}"
        scopes = ["projects:read", "models:read"]
        redirect_uri = "{world.redirect_uri}"
        open_browser = false
        login_timeout = 5
        [proxy]
        port = {free_port()}
        ca_dir = "{tmp_path / 'ca'}"
        [token]
        cache_file = "{tmp_path / 'state' / 'token.json'}"
        """))
    try:
        yield config, seen
    finally:
        server.shutdown()
        server.server_close()


SCRIPT = """\
set -e
base=$1
curl -sf --max-time 20 -H 'Authorization: Bearer None' -H 'X-Client-Session-Id: s-42' \\
     -X POST "$base/v1/projects/p1//publish" -o /dev/null
curl -s --max-time 20 -D - -o /dev/null "$base/v1/projects/p1/models/m1/export-ifc/op-1" \\
     | tr -d '\\r' | grep -i '^location:'
curl -sf --max-time 20 --cacert "$OTHER_CA" --data-binary 'IFC-DATA' \\
     -H 'Content-Type: application/octet-stream' \\
     "$OTHER/uploads/abc" -o /dev/null
"""


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_sample_client_requests_reach_the_api_as_sent(
        world: World, api: tuple[Path, list[dict[str, Any]]], mode: str) -> None:
    config, seen = api
    other_before = len(world.other.seen)
    api_url = config.read_text().split('api_url = "')[1].split('"')[0]
    # forward: the script calls the API's own URL; reverse: the listener exec names
    script = SCRIPT.replace("base=$1", f"base={api_url}" if mode == "forward"
                            else "base=${QONIC_API_URL%/v1}")
    result = world.exec("sh", "-c", script, config=config,
                        env=world.env(OTHER=world.other.https, OTHER_CA=str(world.other.ca_file)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().lower() == (
        f"location: {world.other.https}/exports/op-1/result.ifc")  # passed on, not followed
    publish, export = seen[-2:]
    assert publish["path"] == "/v1/projects/p1//publish"  # the double slash, exactly as sent
    assert publish["headers"]["Authorization"] == f"Bearer {world.access_token}"
    assert publish["headers"]["X-Client-Session-Id"] == "s-42"
    assert export["headers"]["Authorization"] == f"Bearer {world.access_token}"
    uploads = world.other.seen[other_before:]
    assert [u["path"] for u in uploads] == ["/uploads/abc"]
    assert "authorization" not in uploads[0]["headers"]
