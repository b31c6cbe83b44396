"""Run `qonic-proxy run` with a proposed tweak applied at start-up, to measure it first.

Why: the benchmark must not change the product, but "what would X buy?" needs numbers. Each
tweak here is applied by wrapping a mitmproxy or qonic_proxy function before the CLI runs; the
daemon itself is unchanged. Usage: `python bench/variant.py TWEAK[,TWEAK] -- run --config FILE`.

Tweaks:
  no-legacy-log  remove mitmproxy's LegacyLogEvents handler from the root logger. Master installs
                 it to turn every stdlib log record into a deprecated `add_log` event: a second
                 formatting of the record, a call_soon_threadsafe (a self-pipe write) and a
                 dispatch to every addon, for each access-log line.
"""

from __future__ import annotations

import sys
from typing import Any


def no_legacy_log() -> None:
    from mitmproxy import master

    original = master.Master.__init__

    def init(self: master.Master, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._legacy_log_events.uninstall()

    master.Master.__init__ = init  # type: ignore[method-assign]


class _Combined:
    """The daemon's three addons behind one object, with exactly the hooks they define."""

    def __init__(self, readiness: Any, inflight: Any, addon: Any) -> None:
        self.readiness, self.inflight, self.addon = readiness, inflight, addon

    def running(self) -> None:
        self.readiness.running()

    async def requestheaders(self, flow: Any) -> None:
        self.inflight.requestheaders(flow)
        await self.addon.requestheaders(flow)

    def request(self, flow: Any) -> None:
        self.addon.request(flow)

    def responseheaders(self, flow: Any) -> None:
        self.addon.responseheaders(flow)

    def response(self, flow: Any) -> None:
        self.addon.response(flow)
        self.inflight.response(flow)

    def error(self, flow: Any) -> None:
        self.addon.error(flow)
        self.inflight.error(flow)


def one_addon() -> None:
    from mitmproxy.addonmanager import AddonManager

    from qonic_proxy.proxy import daemon
    from qonic_proxy.proxy.addon import QonicAddon

    original = AddonManager.add

    def add(self: AddonManager, *addons: Any) -> None:
        kinds = (daemon._Readiness, daemon._InFlight, QonicAddon)
        ours = [a for a in addons if isinstance(a, kinds)]
        if len(ours) == 3:
            rest = [a for a in addons if not isinstance(a, kinds)]
            ordered = sorted(ours, key=lambda a: [isinstance(a, k) for k in kinds].index(True))
            addons = (*rest, _Combined(*ordered))
        original(self, *addons)

    AddonManager.add = add  # type: ignore[method-assign]


def no_streaming() -> None:
    from qonic_proxy.proxy import assembly

    assembly.STREAM_THRESHOLD = None  # type: ignore[assignment]


TWEAKS = {"no-legacy-log": no_legacy_log, "one-addon": one_addon,
          "no-streaming": no_streaming}


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    for name in filter(None, sys.argv[1].split(",")):
        if name not in TWEAKS:
            print(f"unknown tweak {name!r}; known: {', '.join(TWEAKS)}", file=sys.stderr)
            return 2
        TWEAKS[name]()
    from qonic_proxy.cli.main import main as cli_main

    return cli_main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
