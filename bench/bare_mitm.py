"""Bare mitmproxy, configured exactly like qonic-proxy's daemon but without our addons.

Why: the benchmark's baseline (b). The difference between this and `qonic-proxy run` with the same
config is what our addon, token service and logging cost; the difference between this and a
direct request is mitmproxy's own cost. Same listeners, options, minimal addon set and logging
set-up as `qonic_proxy.proxy.assembly.build_master`; only `QonicAddon` and the in-flight counter are
missing. Prints `bare-mitmproxy ready: reverse http://127.0.0.1:PORT [forward ...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from mitmproxy import master
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig

from qonic_proxy.config.loader import load_config
from qonic_proxy.logs import configure_logging
from qonic_proxy.proxy.assembly import (
    STREAM_THRESHOLD,
    mitm_options,
    prepare_ca_dir,
)
from qonic_proxy.proxy.upstream_trust import write_hashed_bundle
from qonic_proxy.trust import trust_roots


class _Ready:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def running(self) -> None:
        self.event.set()


async def serve(config_path: Path) -> int:
    cfg = load_config(config_path, env={})
    ca_dir = prepare_ca_dir(cfg)
    opts = mitm_options(cfg, ca_dir, write_hashed_bundle(trust_roots(cfg.qonic.ca_file), ca_dir))
    mitm = master.Master(opts, with_termlog=False)
    ready = _Ready()
    mitm.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(),
                    tlsconfig.TlsConfig(), ready)
    mitm.options.update(stream_large_bodies=STREAM_THRESHOLD, connection_strategy="lazy")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, mitm.shutdown)
    run = loop.create_task(mitm.run())
    waiter = loop.create_task(ready.event.wait())
    await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.event.is_set():
        waiter.cancel()
        await run
        return 1
    servers = mitm.addons.get("proxyserver").servers
    ports: dict[str, int] = {}
    for server in servers:
        if not server.is_running:
            print(f"bare-mitmproxy: a listener failed: {server.last_exception}", file=sys.stderr)
            mitm.shutdown()
            await run
            return 1
        ports[server.mode.type_name] = server.listen_addrs[0][1]
    line = f"bare-mitmproxy ready: reverse http://{cfg.proxy.listen_host}:{ports['reverse']}"
    if "regular" in ports:
        line += f" forward http://{cfg.proxy.listen_host}:{ports['regular']}"
    print(line, flush=True)
    await run
    await servers.update([])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", required=True, type=Path, help="a qonic-proxy config file")
    args = parser.parse_args()
    configure_logging("info", "text")  # the daemon's logging set-up, minus our access log lines
    return asyncio.run(serve(args.config))


if __name__ == "__main__":
    sys.exit(main())
