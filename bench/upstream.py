"""A minimal, fast HTTPS upstream for the small-request benchmark: ~1 KiB of JSON per request.

Why not the sandbox: it is a thread-per-connection `http.server`, so at concurrency 32 it would
share the CPU badly with the proxy under test. This asyncio protocol does the least HTTP/1.1 work
that is still correct for keep-alive and `Connection: close`, so the proxy's cost shows. A request
without `Authorization: Bearer ...` gets 401, so a proxy that forgot the token is noticed (wrk
counts non-2xx answers). Prints `upstream ready: port=N`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys


def _body(target: int = 1024) -> bytes:
    """A model list of about `target` bytes (padded to exactly that with a note field)."""
    items: list[dict[str, object]] = []
    while len(json.dumps({"items": items, "note": ""}).encode()) < target - 120:
        i = len(items)
        items.append({"id": f"m-{i:04d}", "name": f"Model {i}.ifc", "size": 1048576 * i})
    pad = target - len(json.dumps({"items": items, "note": ""}).encode())
    return json.dumps({"items": items, "note": "x" * max(0, pad)}).encode()


BODY = _body()
MAX_HEAD = 64 * 1024


def _response(status: str, body: bytes, close: bool) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + body


OK_KEEP = _response("200 OK", BODY, close=False)
OK_CLOSE = _response("200 OK", BODY, close=True)
DENIED = b'{"error":"unauthorized"}'


class Http(asyncio.Protocol):
    """Parses request heads from a byte buffer; bodies are skipped by Content-Length."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.skip = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.skip:
            taken = min(self.skip, len(data))
            self.skip -= taken
            data = data[taken:]
        self.buffer += data
        while self.transport is not None and not self.skip:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end]).lower()
            del self.buffer[:end + 4]
            length = 0
            close = b"\r\nconnection: close" in head or head.endswith(b"http/1.0")
            for line in head.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
            taken = min(length, len(self.buffer))
            del self.buffer[:taken]
            self.skip = length - taken
            if b"\r\nauthorization: bearer " in head:
                self.transport.write(OK_CLOSE if close else OK_KEEP)
            else:
                self.transport.write(_response("401 Unauthorized", DENIED, close))
            if close:
                self.transport.close()
                self.transport = None


async def serve(cert: str, key: str, port: int) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", port, ssl=context, backlog=1024)
    print(f"upstream ready: port={server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.cert, args.key, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
