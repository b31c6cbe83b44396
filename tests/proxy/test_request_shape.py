"""Request shape against the real daemon: what a client may not smuggle to the API (raw sockets).

Header bytes that clients normalise away (bare CR, NUL, obs-fold), absolute-form targets, a
foreign Host inside a forward-mode tunnel, SNI that names the API on another address, heads over
the documented 64 KiB, `Expect: 100-continue` before a refusal, and malformed Host authorities.
The sandbox's echo route shows what arrived upstream. SECURITY.md lists which test fails when
each defence is removed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from pathlib import Path

import pytest

from tests.proxy.lab import Lab, api_traffic, parse_response, port_of, raw_exchange

pytestmark = pytest.mark.e2e

SMUGGLED_HEADERS = {
    "bare-cr": b"X-A: a\rHost: evil.example\r\n",
    "nul": b"X-A: a\x00b\r\n",
    "obs-fold": b"X-A: a\r\n folded: yes\r\n",
    "cr-in-name": b"X-A\rHost: evil.example\r\n",
    "space-in-name": b"Host : evil.example\r\n",
}


def _read_all(sock: socket.socket | ssl.SSLSocket) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError, ssl.SSLError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def tunnel_exchange(lab: Lab, data: bytes, *, target: str | None = None,
                    cafile: Path | None = None) -> bytes:
    """CONNECT (to the API by default), TLS with the API's name as SNI, then raw bytes."""
    target = target or f"localhost:{lab.api_port}"
    with socket.create_connection(("127.0.0.1", lab.forward_port), timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(cafile or lab.world.proxy_ca))
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(data)
            return _read_all(tls)


def _refused(raw: bytes, status: int, *errors: str) -> dict[str, str]:
    code, headers, body = parse_response(raw)
    assert code == status, raw[:300]
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] in errors, answer
    assert (answer.get("what_to_do") or answer["message"]).endswith("."), answer
    assert "validate_inbound_headers" not in answer["message"]
    return answer


# ----- 1. CR, LF, NUL and obs-fold in headers -------------------------------------------------
@pytest.mark.parametrize("name", sorted(SMUGGLED_HEADERS))
def test_control_characters_and_obs_fold_in_headers_get_400_before_upstream(lab: Lab, name: str):
    """Bad names are mitmproxy's own 400 (validate_inbound_headers), bad values ours."""
    bad = SMUGGLED_HEADERS[name]
    before, seen = api_traffic(lab.world), len(lab.bystander.seen)
    reverse = raw_exchange(lab.reverse_port, b"GET /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           + bad + b"Connection: close\r\n\r\n")
    _refused(reverse, 400, "bad_header", "proxy_error")
    tunnel = tunnel_exchange(lab, f"GET /v1/echo HTTP/1.1\r\nHost: localhost:{lab.api_port}"
                             "\r\n".encode() + bad + b"Connection: close\r\n\r\n")
    _refused(tunnel, 400, "bad_header", "proxy_error")
    forward = raw_exchange(lab.forward_port, f"GET {lab.bystander.plain}/x HTTP/1.1\r\nHost: "
                           f"127.0.0.1:{port_of(lab.bystander.plain)}\r\n".encode() + bad
                           + b"Connection: close\r\n\r\n")
    _refused(forward, 400, "bad_header", "proxy_error")
    assert api_traffic(lab.world) == before and len(lab.bystander.seen) == seen


def test_clean_headers_with_a_tab_still_reach_the_api(lab: Lab):
    raw = raw_exchange(lab.reverse_port, b"GET /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"X-A: a\tb\r\nConnection: close\r\n\r\n")
    status, _, body = parse_response(raw)
    assert status == 200 and json.loads(body)["headers"]["X-A"] == "a\tb"


# ----- 2. origin-form only ----------------------------------------------------------------------
def test_absolute_form_on_the_reverse_listener_is_refused_naming_the_forward_listener(lab: Lab):
    before = api_traffic(lab.world)
    for target in ("https://evil.example/x", f"http://127.0.0.1:{lab.reverse_port}/v1/projects",
                   f"{lab.api}/v1/projects"):
        raw = raw_exchange(lab.reverse_port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Connection: close\r\n\r\n".encode())
        answer = _refused(raw, 400, "absolute_form")
        assert "reverse listener" in answer["message"]
        assert lab.daemon.forward_url in answer["message"]
    raw = raw_exchange(lab.reverse_port, b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Connection: close\r\n\r\n")
    _refused(raw, 400, "bad_target")
    assert api_traffic(lab.world) == before


def test_absolute_form_inside_the_api_tunnel_is_refused(lab: Lab):
    before = api_traffic(lab.world)
    raw = tunnel_exchange(lab, f"GET https://evil.example/v1/echo HTTP/1.1\r\nHost: localhost:"
                          f"{lab.api_port}\r\nConnection: close\r\n\r\n".encode())
    _refused(raw, 400, "bad_target")
    assert api_traffic(lab.world) == before


# ----- 3. the API's own Host inside the tunnel -------------------------------------------------
def test_foreign_host_inside_the_api_tunnel_reaches_the_api_as_its_own_authority(lab: Lab):
    raw = tunnel_exchange(lab, b"GET /v1/echo HTTP/1.1\r\nHost: evil.example\r\n"
                          b"Connection: close\r\n\r\n")
    status, _, body = parse_response(raw)
    assert status == 200, raw[:300]
    headers = json.loads(body)["headers"]
    assert headers["Host"] == f"localhost:{lab.api_port}"
    assert headers["Authorization"] == "<valid bearer>"


# ----- 4. interception decided on the real address --------------------------------------------
def test_api_sni_on_another_address_is_tunnelled_with_the_real_certificate(lab: Lab):
    """CONNECT 127.0.0.1:<api port> with SNI `localhost`: only the sandbox's own CA verifies."""
    before = api_traffic(lab.world)[1]
    raw = tunnel_exchange(lab, b"GET /v1/projects HTTP/1.1\r\nHost: localhost\r\n"
                          b"Connection: close\r\n\r\n", target=f"127.0.0.1:{lab.api_port}",
                          cafile=lab.world.sandbox.ca_file)
    assert parse_response(raw)[0] == 401, raw[:300]  # the real API, without our token
    assert api_traffic(lab.world)[1] == before
    # the control: the API's own address is still intercepted (our CA) and gets the token
    raw = tunnel_exchange(lab, f"GET /v1/projects HTTP/1.1\r\nHost: localhost:{lab.api_port}\r\n"
                          "Connection: close\r\n\r\n".encode())
    assert parse_response(raw)[0] == 200, raw[:300]


# ----- 5. the documented 64 KiB head ----------------------------------------------------------
def _head(size: int, target: str = "/v1/echo", host: str = "127.0.0.1") -> bytes:
    start = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode()
    pad = size - len(start) - 2
    half = pad // 2
    return (start + b"X-Pad-1: " + b"a" * (half - 11) + b"\r\n"
            + b"X-Pad-2: " + b"a" * (pad - half - 11) + b"\r\n" + b"\r\n")


def test_heads_over_64_kib_get_431_on_both_listeners(lab: Lab):
    assert len(_head(64 * 1024 + 1)) == 64 * 1024 + 1
    before, seen = api_traffic(lab.world), len(lab.bystander.seen)
    raw = raw_exchange(lab.reverse_port, _head(64 * 1024 + 1))
    assert parse_response(raw)[0] == 431, raw[:300]
    bystander = f"127.0.0.1:{port_of(lab.bystander.plain)}"
    raw = raw_exchange(lab.forward_port, _head(66 * 1024, lab.bystander.plain + "/x", bystander))
    assert parse_response(raw)[0] == 431, raw[:300]
    assert api_traffic(lab.world) == before and len(lab.bystander.seen) == seen
    raw = raw_exchange(lab.reverse_port, _head(64 * 1024))  # the limit itself still passes
    assert parse_response(raw)[0] == 200, raw[:300]


# ----- 6. Expect: 100-continue -----------------------------------------------------------------
def _expect_exchange(port: int, head: str) -> tuple[bytes, bytes]:
    """Send a head with `Expect: 100-continue` and no body; return the first answer and what
    follows it until the connection closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"Expect: 100-continue\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first and (chunk := sock.recv(65536)):
            first += chunk
        return first, _read_all(sock)


@pytest.mark.parametrize(("extra", "status"), [
    ("Origin: https://evil.example\r\nHost: 127.0.0.1", 403),
    ("Sec-Fetch-Site: cross-site\r\nHost: 127.0.0.1", 403),
    ("Host: evil.example", 403),
])
def test_refusals_come_before_any_100_continue(lab: Lab, extra: str, status: int):
    before = api_traffic(lab.world)
    for length in (10, 50 * 1024 * 1024):  # small, and large enough to stream
        first, rest = _expect_exchange(lab.reverse_port, f"POST /v1/upload HTTP/1.1\r\n{extra}\r\n"
                                       f"Content-Length: {length}\r\n")
        assert first.startswith(b"HTTP/1.1 %d" % status), first[:200]
        code, headers, body = parse_response(first + rest)
        assert headers["connection"] == "close" and json.loads(body)["error"]
    assert api_traffic(lab.world) == before


def test_a_refusal_inside_the_api_tunnel_comes_before_any_100_continue(lab: Lab):
    before = api_traffic(lab.world)
    raw = tunnel_exchange(lab, f"POST /v1/upload HTTP/1.1\r\nHost: localhost:{lab.api_port}\r\n"
                          "Origin: https://evil.example\r\nContent-Length: 10\r\n"
                          "Expect: 100-continue\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 403"), raw[:200]
    assert api_traffic(lab.world) == before


def test_a_missing_client_key_is_refused_before_any_100_continue(keyed: Lab):
    first, _ = _expect_exchange(keyed.reverse_port, "POST /v1/upload HTTP/1.1\r\nHost: "
                                "127.0.0.1\r\nContent-Length: 10\r\n")
    assert first.startswith(b"HTTP/1.1 401"), first[:200]


def test_an_accepted_request_still_gets_100_continue(lab: Lab):
    with socket.create_connection(("127.0.0.1", lab.reverse_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
                     b"Connection: close\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 100")
        sock.sendall(b"hello")
        status, _, body = parse_response(_read_all(sock))
    assert status == 200 and json.loads(body)["bytes"] == 5


# ----- 7. malformed Host authorities ------------------------------------------------------------
@pytest.mark.parametrize("host", [
    "[::1]evil.example", "[localhost]", "[127.0.0.1]", "[::1] :{port}", "localhost :{port}",
    "::1", "localhost:{port}:1", "localhost:x",
])
def test_malformed_host_authorities_are_refused(lab: Lab, host: str):
    before = api_traffic(lab.world)
    raw = raw_exchange(lab.reverse_port, f"GET /v1/projects HTTP/1.1\r\nHost: "
                       f"{host.format(port=lab.reverse_port)}\r\nConnection: close\r\n\r\n"
                       .encode())
    _refused(raw, 403, "host_not_allowed")
    assert api_traffic(lab.world) == before


@pytest.mark.parametrize("host", [
    "localhost", "localhost:{port}", "127.0.0.1", "127.0.0.1:{port}", "[::1]", "[::1]:{port}",
])
def test_well_formed_loopback_hosts_are_still_accepted(lab: Lab, host: str):
    raw = raw_exchange(lab.reverse_port, f"GET /v1/projects HTTP/1.1\r\nHost: "
                       f"{host.format(port=lab.reverse_port)}\r\nConnection: close\r\n\r\n"
                       .encode())
    assert parse_response(raw)[0] == 200, raw[:300]
