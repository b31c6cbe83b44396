"""Run `qonic-proxy run` with a proposed tweak applied at start-up, to measure it first.

Why: the benchmark must not change the product, but "what would X buy?" needs numbers. Each
tweak here is applied by wrapping a mitmproxy or qonic_proxy function before the CLI runs; the
daemon itself is unchanged. Usage: `python bench/variant.py TWEAK[,TWEAK] -- run --config FILE`.

Tweaks:
  no-legacy-log  remove mitmproxy's LegacyLogEvents handler from the root logger. Master installs
                 it to turn every stdlib log record into a deprecated `add_log` event: a second
                 formatting of the record, a call_soon_threadsafe (a self-pipe write) and a
                 dispatch to every addon, for each access-log line.
  no-streaming   buffer every body (no stream_large_bodies), to show what streaming saves.
  no-access      access control off (no peer identification, policy or audit log): the baseline
                 that `[access]`'s cost is measured against (bench/access_cost.py in-process).
(The `one-addon` tweak measured in bench/README.md was adopted: the product has one addon.)
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


def no_streaming() -> None:
    from qonic_proxy.proxy import assembly

    assembly.STREAM_THRESHOLD = None  # type: ignore[assignment]


def no_access() -> None:
    from qonic_proxy.proxy import addon

    original = addon.QonicAddon.__init__

    def init(self: addon.QonicAddon, *args: Any, **kwargs: Any) -> None:
        kwargs.update(access=None, audit=None)
        original(self, *args, **kwargs)

    addon.QonicAddon.__init__ = init  # type: ignore[method-assign]


TWEAKS = {"no-legacy-log": no_legacy_log, "no-streaming": no_streaming, "no-access": no_access}


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
