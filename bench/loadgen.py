"""Fallback load generator when wrk is not installed: asyncio, raw sockets, its own process.

Slower than wrk (one Python core), so the benchmark reports direct throughput first: when the
direct number is not far above the proxied ones, the client is the bottleneck and the ratios
understate the proxy's cost. Keep-alive unless the `Connection: close` header is given.
Prints one JSON object like the wrk parser in run.py: rps, p50_ms, p99_ms, requests, non_2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from urllib.parse import urlsplit


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _worker(url: str, headers: list[str], tls: ssl.SSLContext | None, stop: float,
                  latencies: list[float], statuses: list[int]) -> None:
    parts = urlsplit(url)
    close = any(h.lower().replace(" ", "") == "connection:close" for h in headers)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()
    writer = None
    while time.monotonic() < stop:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port,
                                                               ssl=tls)
            begin = time.monotonic()
            writer.write(request)
            statuses.append(await asyncio.wait_for(_read_response(reader), 5))
            latencies.append(time.monotonic() - begin)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            statuses.append(0)
            if writer is not None:  # reconnect after an error
                writer.close()
                writer = None
            continue
        if close and writer is not None:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def run(url: str, connections: int, seconds: float, headers: list[str]) -> dict[str, float]:
    latencies: list[float] = []
    statuses: list[int] = []
    tls = None
    if url.startswith("https:"):  # one context for all connections: creating one is slow
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # like wrk: load, not trust
    begin = time.monotonic()
    await asyncio.gather(*(_worker(url, headers, tls, begin + seconds, latencies, statuses)
                           for _ in range(connections)))
    elapsed = time.monotonic() - begin
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3 if latencies \
            else float("nan")

    ok = sum(1 for s in statuses if 200 <= s < 400)
    return {"rps": len(latencies) / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "requests": len(latencies), "non_2xx": len(statuses) - ok,
            "connect_errors": statuses.count(0), "timeouts": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.connections, args.seconds, args.header))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
