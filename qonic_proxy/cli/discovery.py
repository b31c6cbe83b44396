"""Which daemon is ours: the runtime file of this config first, else the configured port.

`status`, `login` and `exec` talk to "the running daemon" on `[proxy] port`. With `port = 0`
only the runtime file knows the real port; and on a fixed port another config's daemon may
answer, or, while ours is stopped, any program another local account started there. So the
verbs get a Config whose port is that of this config's daemon, or 0 (no daemon to talk to) when
the listener there is held by another account or serves another API; the reason is said once.

The expected account is the owner of this config's runtime file (in the token cache's folder),
when the pid it names still runs as that account: for a system service that runs as its own
account, that account's file, which root can read (another account of the machine cannot see
into the service's 0700 state folder, and then expects the daemon under its own account, root,
or the unit's account `qonic-proxy`, see daemon_client). Without a runtime file: our own account.
"""

from __future__ import annotations

import contextlib
import os

from qonic_proxy.cli.daemon_client import (
    ForeignListener,
    expect_owner,
    fetch_health,
    open_connection,
    tell_once,
)
from qonic_proxy.config.model import Config
from qonic_proxy.hosts import Origin
from qonic_proxy.records import replace
from qonic_proxy.runtime_file import RuntimeFile


def _on_port(cfg: Config, port: int) -> Config:
    return replace(cfg, proxy=replace(cfg.proxy, port=port))


def with_running_daemon(cfg: Config) -> Config:
    """`cfg` with [proxy] port pointing at this config's running daemon (0 for none)."""
    api_url = str(Origin.parse(cfg.qonic.api_url))
    found = RuntimeFile(cfg).read_owned()
    if found is not None and found[0].reverse_port:
        record, owner = found
        daemon = _on_port(cfg, record.reverse_port)
        expect_owner(daemon, owner)
        try:
            with contextlib.closing(open_connection(daemon, timeout=1.0)):
                pass  # the listener is checked on connect; nothing is sent
        except ForeignListener as err:
            tell_once(str(err))
            return _on_port(cfg, 0)
        except OSError:
            pass  # it just stopped: the verbs find no daemon there
        if record.api_url != api_url:
            tell_once(f"the qonic-proxy running for this config (pid {record.pid}) serves "
                      f"{record.api_url}, not {api_url}; restart it to serve the config's "
                      "api_url")
            return _on_port(cfg, 0)
        return daemon
    if not cfg.proxy.port:
        return cfg
    expect_owner(cfg, os.getuid())
    try:
        health = fetch_health(cfg)
    except ForeignListener as err:
        tell_once(str(err))
        return _on_port(cfg, 0)
    ours = health is None or health.get("api_url") == api_url
    return cfg if ours else _on_port(cfg, 0)
