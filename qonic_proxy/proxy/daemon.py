"""Assembles mitmproxy around our addon and runs it: listeners, readiness, signals, shutdown.

We build a bare `Master` with only the four addons a proxy needs (core, proxyserver, next_layer,
tlsconfig) instead of DumpMaster: no console, no flow storage, no ErrorCheck that calls
sys.exit() behind our back, so a busy port becomes our own one-sentence error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import ssl
import sys
import time
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certifi
from mitmproxy import log as mitmproxy_log
from mitmproxy import master, options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.proxy import mode_specs

from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.hosts import Origin, is_loopback_host
from qonic_proxy.metrics import Metrics
from qonic_proxy.proxy import error_pages
from qonic_proxy.proxy.addon import Guard, ListenerInfo, QonicAddon
from qonic_proxy.proxy.client_key import load_or_create_key
from qonic_proxy.sdnotify import Notifier
from qonic_proxy.tokens.service import TokenService
from qonic_proxy.tokens.store import TokenStore, cache_key

log = logging.getLogger("qonic_proxy.daemon")

STREAM_THRESHOLD = "1m"  # bodies above this stream through instead of being buffered
SHUTDOWN_GRACE = 30.0  # seconds in-flight requests get to finish after SIGTERM


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700; tighten it when it is ours and looser."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def upstream_trust_file(cfg: Config) -> str | None:
    """The CA bundle mitmproxy verifies Qonic with: the public CAs plus `[qonic] ca_file`.

    mitmproxy's option *replaces* the trust store, but ca_file is meant to *add* a CA (a
    corporate proxy CA, the sandbox's CA), so we write the union next to the interception CA.
    """
    if cfg.qonic.ca_file is None:
        return None
    bundle = private_dir(cfg.proxy.ca_dir) / "upstream-trust.pem"
    extra = cfg.qonic.ca_file.read_bytes()
    public = Path(certifi.where()).read_bytes()
    tmp = bundle.with_suffix(".tmp")
    tmp.write_bytes(public.rstrip(b"\n") + b"\n" + extra)
    tmp.replace(bundle)
    return str(bundle)


def mitm_modes(cfg: Config) -> list[str]:
    modes = [f"reverse:{cfg.qonic.api_url}@{cfg.proxy.port}"]
    if cfg.proxy.forward_port:
        modes.append(f"regular@{cfg.proxy.forward_port}")
    return modes


def tcp_only_reverse_listener() -> None:
    """Make mitmproxy's `reverse:https://...` listener TCP only (idempotent).

    mitmproxy also binds UDP on that port for HTTP/3, served by Rust threads of mitmproxy_rs.
    We never advertise HTTP/3, and those threads outlive the event loop: at interpreter exit
    they could still call into Python, and about one stop in five ended in a segfault (exit
    -11 instead of 0, which systemd counts as a failure). No UDP server, no Rust threads.
    """
    if getattr(mode_specs.ReverseMode, "_qonic_tcp_only", False):
        return
    original = mode_specs.ReverseMode.__post_init__

    def post_init(self: mode_specs.ReverseMode) -> None:
        original(self)
        if self.scheme == "https" and self.transport_protocol == "both":
            object.__setattr__(self, "transport_protocol", "tcp")

    mode_specs.ReverseMode.__post_init__ = post_init  # type: ignore[method-assign]
    mode_specs.ReverseMode._qonic_tcp_only = True  # type: ignore[attr-defined]


def intercept_pattern(origin: Origin) -> str:
    """allow_hosts regex: only the API's exact host:port is TLS-intercepted; the rest tunnels."""
    return f"^{re.escape(origin.host)}:{origin.port}$"


def drop_legacy_log_bridge() -> None:
    """Remove the root-logger handler mitmproxy installs to turn every log record into a
    deprecated `add_log` event sent to each addon: nothing uses it, and it cost ~67 µs per
    request (our access-log line included). Measured with bench/addon_cost.py."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, mitmproxy_log.LegacyLogEvents):
            root.removeHandler(handler)


class Daemon:
    """One running qonic-proxy: the token service plus mitmproxy with our addon."""

    def __init__(
        self,
        cfg: Config,
        *,
        open_browser: Callable[[str], object] | None = webbrowser.open,
        notifier: Notifier | None = None,
        announce_ready: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier.from_env()
        self.announce_ready = announce_ready or _print_ready
        self.listeners = ListenerInfo(public_host=cfg.proxy.listen_host)
        self.api_origin = Origin.parse(cfg.qonic.api_url)
        self.store = TokenStore(cfg.token.cache_file, cache_key(cfg))
        self.metrics = Metrics(lambda: self.tokens.seconds_until_expiry())
        self.tokens = TokenService(
            cfg, self.store, metrics=self.metrics, open_browser=open_browser,
            login_page_url=lambda: f"{self.listeners.reverse_url}/-/login"
            if self.listeners.reverse_port else None,
            on_change=self._report_status,
        )
        self.readiness = asyncio.Event()
        self._stop = asyncio.Event()
        self._master: master.Master | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[Any]] = []
        self.started_at = time.monotonic()

    # ----- start ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the cached token, bind the listeners, announce readiness; raise on failure."""
        self.tokens.load_from_store()
        key = None
        if self.cfg.proxy.client_key_file is not None:
            key = load_or_create_key(self.cfg.proxy.client_key_file)
        if not is_loopback_host(self.cfg.proxy.listen_host):
            log.warning("LISTENING ON %s, NOT LOOPBACK: other machines can reach this proxy; "
                        "each request must carry the client key", self.cfg.proxy.listen_host)
        trust = upstream_trust_file(self.cfg)
        error_pages.install()
        opts = options.Options(
            mode=mitm_modes(self.cfg),
            listen_host=self.cfg.proxy.listen_host,
            confdir=str(private_dir(self.cfg.proxy.ca_dir)),
            allow_hosts=[intercept_pattern(self.api_origin)],
            ssl_insecure=False,
            ssl_verify_upstream_trusted_ca=trust,
            http2=False,
        )
        tcp_only_reverse_listener()
        self._master = master.Master(opts, with_termlog=False)
        drop_legacy_log_bridge()
        guard = Guard(allowed_hosts=frozenset(self.cfg.proxy.allowed_hosts),
                      listeners=self.listeners)
        self.addon = QonicAddon(
            api_origin=self.api_origin, tokens=self.tokens, metrics=self.metrics,
            guard=guard, listeners=self.listeners, status_extra=self._listener_status,
            upstream_tls=ssl.create_default_context(cafile=trust or certifi.where()), key=key,
            on_running=self.readiness.set,
        )
        # One addon of ours, not three: mitmproxy visits every addon for every event (~9 µs
        # each), so readiness and the in-flight count live in QonicAddon too.
        self._master.addons.add(
            core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(),
            tlsconfig.TlsConfig(), self.addon,
        )
        self._master.options.update(
            stream_large_bodies=STREAM_THRESHOLD,
            connection_strategy="lazy",
            keep_host_header=True,  # the Host guard must see what the client sent
        )
        self._run_task = asyncio.get_running_loop().create_task(self._master.run())
        waiter = asyncio.get_running_loop().create_task(self.readiness.wait())
        await asyncio.wait({waiter, self._run_task}, return_when=asyncio.FIRST_COMPLETED)
        if not self.readiness.is_set():
            waiter.cancel()
            await self._run_task  # raises what made mitmproxy stop
            raise QonicProxyError("mitmproxy stopped during start-up; see the log above")
        self._check_listeners()
        self._background = [
            asyncio.get_running_loop().create_task(self.tokens.watch_store()),
            asyncio.get_running_loop().create_task(self._refresh_ahead()),
            asyncio.get_running_loop().create_task(self.notifier.run_watchdog(lambda: True)),
        ]
        ready = self._ready_line()
        self.announce_ready(ready)
        log.info("%s (started in %.2f s)", ready, time.monotonic() - self.started_at)
        self.notifier.ready(self.status_text())
        if not self.tokens.is_usable():
            if self.tokens.tokens and self.tokens.tokens.refresh_token:
                await self.tokens.get_access_token()  # an expired token that can be refreshed
            if not self.tokens.is_usable():
                self.tokens.offer_login()

    def _proxyserver(self) -> proxyserver.Proxyserver:
        assert self._master is not None
        return self._master.addons.get("proxyserver")

    def _check_listeners(self) -> None:
        for server in self._proxyserver().servers:
            if not server.is_running:
                which = "forward_port" if server.mode.type_name == "regular" else "port"
                raise QonicProxyError(
                    f"could not listen on {self.cfg.proxy.listen_host} for the "
                    f"{server.mode.type_name} listener ({_os_reason(server.last_exception)}); "
                    f"stop the program using that port or change [proxy] {which}"
                    + (f" in {self.cfg.path}" if self.cfg.path else "")
                )
            port = server.listen_addrs[0][1]
            if server.mode.type_name == "reverse":
                self.listeners.reverse_port = port
            else:
                self.listeners.forward_port = port

    def _ready_line(self) -> str:
        parts = [f"qonic-proxy ready: reverse {self.listeners.reverse_url}"]
        if self.listeners.forward_url:
            parts.append(f"forward {self.listeners.forward_url}")
        parts.append(f"api {self.api_origin}")
        return " ".join(parts)

    def _listener_status(self) -> dict[str, Any]:
        return {"listeners": {"reverse": self.listeners.reverse_url,
                              "forward": self.listeners.forward_url},
                "api_url": str(self.api_origin), "pid": os.getpid()}

    # ----- status --------------------------------------------------------------------------
    def status_text(self) -> str:
        """One line for `systemctl status`: never a secret, always what to do."""
        if self.tokens.is_usable():
            remaining = self.tokens.seconds_until_expiry()
            if remaining is None:
                return "logged in to Qonic; serving"
            until = time.strftime("%H:%M", time.localtime(time.time() + remaining))
            return f"logged in to Qonic (token valid until {until}); serving"
        return "waiting for login: " + self.tokens.what_to_do()

    def _report_status(self) -> None:
        self.notifier.status(self.status_text())

    async def _refresh_ahead(self) -> None:
        """Refresh before expiry even when no request arrives, so the next one never waits."""
        while True:
            due_in = self.tokens.refresh_due_in()
            tokens = self.tokens.tokens
            if due_in is None or tokens is None or not tokens.refresh_token:
                await asyncio.sleep(5)
                continue
            if due_in > 0:
                # wake at least every 10 s: asyncio sleeps on the monotonic clock, which stands
                # still while the machine is suspended, but token expiry is wall-clock time
                await asyncio.sleep(min(due_in, 10.0))
                continue
            await self.tokens.refresh(tokens.access_token)
            if self.tokens.tokens is tokens:  # refresh failed; do not hammer the token endpoint
                await asyncio.sleep(10)

    # ----- run and stop --------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _reload(self) -> None:
        log.info("SIGHUP: re-reading the token cache")
        try:
            if not self.tokens.load_from_store():
                log.warning("no usable token in %s", self.store.path)
        except QonicProxyError as err:
            log.error("%s", err)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        assert self._run_task is not None
        stopper = asyncio.get_running_loop().create_task(self._stop.wait())
        await asyncio.wait({stopper, self._run_task}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then shut mitmproxy down."""
        self.notifier.stopping("stopping: finishing in-flight requests")
        if self._master is None:
            return
        with contextlib.suppress(Exception):
            await self._proxyserver().servers.update([])
        deadline = time.monotonic() + grace
        while self.addon.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.addon.inflight:
            log.warning("stopping with %d request(s) still in flight", self.addon.inflight)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.tokens.close()
        self._master.shutdown()
        if self._run_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._run_task, 10)


def _os_reason(err: BaseException | None) -> str:
    if err is None:
        return "unknown error"
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno).lower()
    return str(err).split("\n", 1)[0]


def _print_ready(line: str) -> None:
    print(line, flush=True)
    sys.stderr.flush()


async def serve(cfg: Config, **kwargs: Any) -> int:
    """The `run` verb: start, serve until SIGTERM/SIGINT, stop gracefully. Returns the exit code."""
    daemon = Daemon(cfg, **kwargs)
    daemon.install_signal_handlers()
    try:
        await daemon.start()
    except BaseException:
        await daemon.stop(grace=0)
        raise
    await daemon.wait()
    await daemon.stop()
    return 0
