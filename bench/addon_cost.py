"""What our addon costs per request, in CPU microseconds, measured without network noise.

Why: on a small shared machine requests/s moves by +-20 % between identical runs, far more than
the 5 % we want to resolve. Here the same synthetic flow is pushed through mitmproxy's addon
manager (the four HTTP hooks every proxied request fires) in-process: once with the daemon's real
addon chain (started by `qonic_proxy.daemon.Daemon` with a cached token and the daemon's logging
set-up, log lines going to a file), once with the bare addon set. The difference is our cost per
request; compare it with mitmproxy's own CPU per request from the benchmark (~1,500-2,000 us).

    python bench/addon_cost.py [--flows N] [--tweaks no-legacy-log] [--log-level info]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mitmproxy import master, options  # noqa: E402
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig  # noqa: E402
from mitmproxy.proxy.layers.http import (  # noqa: E402
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.proxy.mode_specs import ProxyMode  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

UPSTREAM = "https://127.0.0.1:9"  # never contacted: flows are synthetic


def _flow(reverse_port: int) -> Any:
    flow = tflow.tflow(resp=True)
    flow.client_conn.proxy_mode = ProxyMode.parse(f"reverse:{UPSTREAM}@{reverse_port}")
    flow.request.scheme, flow.request.host, flow.request.port = "https", "127.0.0.1", 9
    flow.request.path = "/v1/projects/p-1001/models"
    flow.request.headers["Host"] = f"127.0.0.1:{reverse_port}"
    flow.response.content = b"x" * 1024
    return flow


async def _drive(mitm: master.Master, reverse_port: int, flows: int) -> float:
    """CPU seconds per flow for the four HTTP hooks, including deferred add_log events."""
    hooks = (HttpRequestHeadersHook, HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook)
    for _ in range(200):  # warm-up
        flow = _flow(reverse_port)
        for hook in hooks:
            await mitm.addons.handle_lifecycle(hook(flow))
    prepared = [_flow(reverse_port) for _ in range(flows)]
    await asyncio.sleep(0)
    begin = time.process_time()
    for flow in prepared:
        for hook in hooks:
            await mitm.addons.handle_lifecycle(hook(flow))
        await asyncio.sleep(0)  # let call_soon(_threadsafe) work queued by the hooks run
    return (time.process_time() - begin) / flows


async def bare_cost(flows: int) -> float:
    mitm = master.Master(options.Options(mode=[f"reverse:{UPSTREAM}@0"],
                                         listen_host="127.0.0.1"), with_termlog=False)
    mitm.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(),
                    tlsconfig.TlsConfig())
    try:
        return await _drive(mitm, 8080, flows)
    finally:
        mitm._legacy_log_events.uninstall()


async def started_daemon(workdir: Path, extra_toml: str = "") -> Any:
    """The real Daemon, started in this loop on port 0 with a cached token; stop it after use."""
    from qonic_proxy.config.loader import load_config
    from qonic_proxy.oauth.tokenset import TokenSet
    from qonic_proxy.proxy.daemon import Daemon
    from qonic_proxy.tokens.store import TokenStore, cache_key

    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.toml"
    config.write_text(
        f'[qonic]\napi_url = "{UPSTREAM}"\n'
        '[oauth]\nclient_id = "bench"\nopen_browser = false\n'
        'redirect_uri = "http://127.0.0.1:9/callback"\n'
        f'[proxy]\nport = 0\nca_dir = "{workdir / "ca"}"\n'
        f'[token]\ncache_file = "{workdir / "state" / "token.json"}"\n' + extra_toml)
    cfg = load_config(config, env={})
    now = time.time()
    TokenStore(cfg.token.cache_file, cache_key(cfg)).save(TokenSet(
        access_token="bench-" + "x" * 40, refresh_token=None, expires_at=now + 3600,
        scopes=cfg.oauth.scopes, token_type="Bearer", obtained_at=now))  # noqa: S106
    daemon = Daemon(cfg, open_browser=None, announce_ready=lambda line: None)
    await daemon.start()
    return daemon


async def daemon_cost(flows: int, workdir: Path) -> float:
    daemon = await started_daemon(workdir)
    try:
        assert daemon._master is not None
        return await _drive(daemon._master, daemon.listeners.reverse_port, flows)
    finally:
        await daemon.stop(grace=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--flows", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating bare/daemon rounds; the minimum of each is kept, as "
                             "interference from other processes only ever adds time")
    parser.add_argument("--log-level", default="info", choices=("info", "warning"))
    parser.add_argument("--tweaks", default="", help="bench/variant.py tweaks to apply first")
    args = parser.parse_args()
    from bench import variant
    from qonic_proxy.logs import configure_logging

    for name in filter(None, args.tweaks.split(",")):
        variant.TWEAKS[name]()
    with tempfile.TemporaryDirectory(prefix="qonic-addon-cost-") as tmp:
        workdir = Path(tmp)
        log_file = open(workdir / "stderr.log", "w")  # noqa: SIM115 - closed below
        real_stderr, sys.stderr = sys.stderr, log_file  # the daemon logs to stderr: a file here
        try:
            configure_logging(args.log_level, "text")
            bares, ourses = [], []
            for i in range(args.rounds):
                bares.append(asyncio.run(bare_cost(args.flows)))
                ourses.append(asyncio.run(daemon_cost(args.flows, workdir / str(i))))
            bare, ours = min(bares), min(ourses)
        finally:
            sys.stderr = real_stderr
            log_file.close()
            logging.getLogger().handlers.clear()
    result = {"flows": args.flows, "rounds": args.rounds, "log_level": args.log_level,
              "tweaks": args.tweaks,
              "bare_us_per_request": bare * 1e6, "qonic_us_per_request": ours * 1e6,
              "addon_us_per_request": (ours - bare) * 1e6}
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
