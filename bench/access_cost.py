"""What access control ([access]: peer identity, policy, audit log) costs, in CPU microseconds.

The daemon's real addon chain is driven in-process through mitmproxy's addon manager (as in
addon_cost.py), once with access control on (identification in `client_connected`, the policy,
an audit line per request to a file) and once with it off (the same build, `peer_check` and
`audit` removed). Two cases:

- per new connection: `client_connected` + the four HTTP hooks, each flow on a new client
  connection whose addresses are those of a real, open loopback connection (a real sock_diag
  lookup each time);
- per keep-alive request: the four HTTP hooks on one connection identified once.

The socket-table lookup alone is also timed, both ways (sock_diag and the /proc fallback), with
the number of TCP sockets on the machine (the /proc fallback grows with it). Ratios are on/off.

    python bench/access_cost.py [--flows N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mitmproxy import master  # noqa: E402
from mitmproxy.proxy.layers.http import (  # noqa: E402
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.proxy.server_hooks import ClientConnectedHook  # noqa: E402

from bench.addon_cost import _flow, started_daemon  # noqa: E402

HOOKS = (HttpRequestHeadersHook, HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook)
POOL = 200  # real loopback connections whose addresses the synthetic flows carry


def loopback_pool(count: int) -> tuple[socket.socket, list[tuple[socket.socket, socket.socket]]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(count)
    pairs = []
    for _ in range(count):
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        pairs.append((client, accepted))
    return server, pairs


async def drive(mitm: master.Master, port: int, flows: int,
                pairs: list[tuple[socket.socket, socket.socket]], *, new_connection: bool,
                ) -> float:
    """CPU seconds per flow."""
    prepared = []
    shared = _flow(port).client_conn
    for i in range(flows):
        flow = _flow(port)
        if new_connection:
            accepted = pairs[i % len(pairs)][1]
            flow.client_conn.sockname = accepted.getsockname()
            flow.client_conn.peername = accepted.getpeername()
        else:
            flow.client_conn = shared
        prepared.append(flow)
    shared.sockname, shared.peername = pairs[0][1].getsockname(), pairs[0][1].getpeername()
    await mitm.addons.handle_lifecycle(ClientConnectedHook(shared))
    await asyncio.sleep(0)
    begin = time.process_time()
    for flow in prepared:
        if new_connection:
            await mitm.addons.handle_lifecycle(ClientConnectedHook(flow.client_conn))
        for hook in HOOKS:
            await mitm.addons.handle_lifecycle(hook(flow))
        await asyncio.sleep(0)
    return (time.process_time() - begin) / flows


async def daemon_run(workdir: Path, flows: int, pairs: list[tuple[socket.socket, socket.socket]],
                     *, access: bool, new_connection: bool, audit: bool = True) -> float:
    daemon = await started_daemon(workdir, (
        f'[access]\nusers = [4242]\nread_only = [4243]\naudit_log = "{workdir / "audit.jsonl"}"\n'))
    try:
        if not access:
            daemon.addon.peer_check = None
        if not access or not audit:
            daemon.addon.audit = None
        assert daemon._master is not None
        await drive(daemon._master, daemon.listeners.reverse_port, 200, pairs,
                    new_connection=new_connection)  # warm-up
        return await drive(daemon._master, daemon.listeners.reverse_port, flows, pairs,
                           new_connection=new_connection)
    finally:
        await daemon.stop(grace=0)


def lookup_cost(pairs: list[tuple[socket.socket, socket.socket]], fallback: bool) -> float:
    from qonic_proxy.access import peer

    real = peer._sock_diag

    def no_netlink(*_: Any) -> None:
        raise OSError("bench: /proc fallback")

    if fallback:
        peer._sock_diag = no_netlink  # type: ignore[assignment]
    try:
        n = 50 if fallback else 2000
        begin = time.process_time()
        for i in range(n):
            accepted = pairs[i % len(pairs)][1]
            assert peer.socket_peer_uid(accepted) is not None
        return (time.process_time() - begin) / n
    finally:
        peer._sock_diag = real  # type: ignore[assignment]


def tcp_sockets() -> int:
    total = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as table:
                total += sum(1 for _ in table) - 1
        except OSError:
            pass
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--flows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating off/on rounds; the minimum of each is kept")
    args = parser.parse_args()
    from qonic_proxy.logs import configure_logging

    server, pairs = loopback_pool(POOL)
    result: dict[str, Any] = {"flows": args.flows, "rounds": args.rounds,
                              "tcp_sockets": tcp_sockets(),
                              "lookup_sock_diag_us": lookup_cost(pairs, False) * 1e6,
                              "lookup_proc_us": lookup_cost(pairs, True) * 1e6}
    with tempfile.TemporaryDirectory(prefix="qonic-access-cost-") as tmp:
        log_file = open(Path(tmp) / "stderr.log", "w")  # noqa: SIM115 - closed below
        real_stderr, sys.stderr = sys.stderr, log_file
        try:
            configure_logging("info", "text")
            for case, new in (("new_connection", True), ("keep_alive", False)):
                off, on, no_audit = [], [], []
                for i in range(args.rounds):
                    no_audit.append(asyncio.run(daemon_run(
                        Path(tmp) / f"{case}-noaudit-{i}", args.flows, pairs, access=True,
                        new_connection=new, audit=False)))
                    off.append(asyncio.run(daemon_run(Path(tmp) / f"{case}-off-{i}", args.flows,
                                                      pairs, access=False, new_connection=new)))
                    on.append(asyncio.run(daemon_run(Path(tmp) / f"{case}-on-{i}", args.flows,
                                                     pairs, access=True, new_connection=new)))
                result[f"{case}_off_us"] = min(off) * 1e6
                result[f"{case}_on_us"] = min(on) * 1e6
                result[f"{case}_on_without_audit_us"] = min(no_audit) * 1e6
                result[f"{case}_added_us"] = (min(on) - min(off)) * 1e6
                result[f"{case}_added_without_audit_us"] = (min(no_audit) - min(off)) * 1e6
                result[f"{case}_hook_ratio"] = min(on) / min(off)
        finally:
            sys.stderr = real_stderr
            log_file.close()
            logging.getLogger().handlers.clear()
            for pair in pairs:
                for sock in pair:
                    sock.close()
            server.close()
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
