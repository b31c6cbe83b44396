"""Which daemon is ours: the runtime file of this config first, else the configured port.

`status`, `login` and `exec` talk to "the running daemon" on `[proxy] port`. With `port = 0`
only the runtime file knows the real port; and on a fixed port another config's daemon may
answer. So the verbs get a Config whose port is that of this config's daemon, or 0 (no daemon
to talk to) when the one answering serves another API.
"""

from __future__ import annotations

import dataclasses

from qonic_proxy.cli.daemon_client import daemon_health
from qonic_proxy.config.model import Config
from qonic_proxy.hosts import Origin
from qonic_proxy.runtime_file import RuntimeFile


def with_running_daemon(cfg: Config) -> Config:
    """`cfg` with [proxy] port pointing at this config's running daemon (0 for none)."""
    record = RuntimeFile(cfg).read()
    if record is not None and record.reverse_port:
        port = record.reverse_port
    elif cfg.proxy.port:
        health = daemon_health(cfg)
        ours = health is None or health.get("api_url") == str(Origin.parse(cfg.qonic.api_url))
        port = cfg.proxy.port if ours else 0
    else:
        return cfg
    return dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, port=port))
