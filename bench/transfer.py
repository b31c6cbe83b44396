"""A streaming HTTP/1.1 client for the large transfers: constant memory, SHA-256 on the fly.

Why our own: we need the same client for direct, reverse-mode and forward-mode (CONNECT) transfers,
byte counts and a digest of what really arrived, and never a whole body in memory. Used
in-process by the streaming guard test and as a process of its own by the benchmark (so that its
CPU use is not mixed with the orchestrator's): `python bench/transfer.py ...` prints one JSON line.
The token for direct requests comes from $BENCH_TOKEN, never from the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import ssl
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from qonic_proxy.sandbox.patterns import pattern_bytes

PERIOD = 251  # the sandbox's pattern: byte i is i % 251
SEND_BLOCK = pattern_bytes(0, PERIOD * 4096)  # whole periods: consecutive blocks continue it
RECV_BUFFER = 1024 * 1024
MAX_HEAD = 64 * 1024
DOWNLOAD_PATH = "/v1/projects/p-1001/models/m-architecture/download?size={size}"
UPLOAD_PATH = "/v1/upload"


@dataclass(frozen=True)
class Route:
    """How to reach the API: `direct` (TLS to it), `reverse` (plain HTTP to the proxy) or
    `forward` (CONNECT through the proxy, then TLS trusting the proxy's CA)."""

    mode: str
    api_host: str
    api_port: int
    api_ca: Path | None = None
    proxy_port: int | None = None
    proxy_ca: Path | None = None
    token: str | None = None  # sent as Authorization (direct only: the proxy adds its own)
    timeout: float = 60.0


@dataclass
class Result:
    op: str
    mode: str
    status: int
    bytes: int
    seconds: float
    sha256: str
    server_bytes: int | None = None  # upload: what the API says it received


def connect(route: Route) -> socket.socket:
    if route.mode == "reverse":
        assert route.proxy_port is not None
        return socket.create_connection(("127.0.0.1", route.proxy_port), timeout=route.timeout)
    if route.mode == "direct":
        raw = socket.create_connection((route.api_host, route.api_port), timeout=route.timeout)
        return _tls(raw, route.api_ca, route.api_host)
    if route.mode == "forward":
        assert route.proxy_port is not None
        raw = socket.create_connection(("127.0.0.1", route.proxy_port), timeout=route.timeout)
        authority = f"{route.api_host}:{route.api_port}"
        raw.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        status, _, rest = _read_head(raw)
        if status != 200 or rest:
            raw.close()
            raise RuntimeError(f"the proxy answered CONNECT with {status}")
        return _tls(raw, route.proxy_ca, route.api_host)
    raise ValueError(f"unknown mode {route.mode!r}")


def _tls(raw: socket.socket, ca: Path | None, host: str) -> socket.socket:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.set_alpn_protocols(["http/1.1"])
    return context.wrap_socket(raw, server_hostname=host)


def _host_header(route: Route) -> str:
    if route.mode == "reverse":
        return f"127.0.0.1:{route.proxy_port}"
    return f"{route.api_host}:{route.api_port}"


def _request_head(route: Route, method: str, path: str, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {route.token}\r\n" if route.token else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: {_host_header(route)}\r\n{auth}{extra}"
            "Connection: close\r\n\r\n").encode()


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-cased headers, and whatever body bytes came with the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the connection closed before a complete response head")
        data += chunk
        if len(data) > MAX_HEAD:
            raise RuntimeError("the response head is too large")
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def _read_body(sock: socket.socket, length: int, first: bytes, digest: hashlib._Hash) -> int:
    """Read exactly `length` bytes into a fixed buffer, hashing each full buffer."""
    digest.update(first)
    got = len(first)
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    filled = 0
    while got < length:
        n = sock.recv_into(view[filled:], min(RECV_BUFFER - filled, length - got))
        if n == 0:
            break
        filled += n
        got += n
        if filled == RECV_BUFFER:
            digest.update(view)
            filled = 0
    digest.update(view[:filled])
    return got


def download(route: Route, size: int) -> Result:
    """GET `size` pattern bytes; sha256 is over what arrived (compare with pattern_sha256)."""
    begin = time.monotonic()
    with connect(route) as sock:
        sock.sendall(_request_head(route, "GET", DOWNLOAD_PATH.format(size=size)))
        status, headers, rest = _read_head(sock)
        digest = hashlib.sha256()
        length = int(headers.get("content-length", "-1"))
        if length < 0:
            raise RuntimeError(f"answer {status} without Content-Length")
        got = _read_body(sock, length, rest, digest)
    return Result("download", route.mode, status, got, time.monotonic() - begin,
                  digest.hexdigest())


def upload(route: Route, size: int) -> Result:
    """POST `size` pattern bytes with a Content-Length; the API answers bytes and sha256."""
    begin = time.monotonic()
    with connect(route) as sock:
        sock.sendall(_request_head(route, "POST", UPLOAD_PATH,
                                   "Content-Type: application/octet-stream\r\n"
                                   f"Content-Length: {size}\r\n"))
        sent = 0
        view = memoryview(SEND_BLOCK)
        try:
            while sent < size:
                piece = view[: min(len(SEND_BLOCK), size - sent)]
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # an early answer (an error): read it below
        status, headers, rest = _read_head(sock)
        body = rest
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    seconds = time.monotonic() - begin
    answer = json.loads(body) if status == 200 else {}
    return Result("upload", route.mode, status, sent, seconds, str(answer.get("sha256", "")),
                  server_bytes=answer.get("bytes"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("op", choices=("download", "upload"))
    parser.add_argument("--mode", choices=("direct", "reverse", "forward"), required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--api", required=True, help="HOST:PORT of the API (the sandbox)")
    parser.add_argument("--api-ca", type=Path)
    parser.add_argument("--proxy-port", type=int)
    parser.add_argument("--proxy-ca", type=Path)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    host, _, port = args.api.rpartition(":")
    route = Route(args.mode, host, int(port), args.api_ca, args.proxy_port, args.proxy_ca,
                  os.environ.get("BENCH_TOKEN") or None, args.timeout)
    result = download(route, args.size) if args.op == "download" else upload(route, args.size)
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
