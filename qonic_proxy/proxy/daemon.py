"""Runs one qonic-proxy: start (token, listeners, readiness), status, refresh-ahead, signals, stop.

How mitmproxy is put together around our addon lives in `assembly`; this module is the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import webbrowser
from collections.abc import Callable
from typing import Any

from mitmproxy import master
from mitmproxy.addons import proxyserver

from qonic_proxy.access.audit import AuditLog
from qonic_proxy.access.policy import Policy
from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.hosts import Origin, is_loopback_host
from qonic_proxy.metrics import Metrics
from qonic_proxy.proxy.addon import QonicAddon
from qonic_proxy.proxy.assembly import STREAM_THRESHOLD, build_master, upstream_trust
from qonic_proxy.proxy.client_key import load_or_create_key
from qonic_proxy.proxy.guard import Guard
from qonic_proxy.proxy.listeners import ListenerInfo
from qonic_proxy.proxy.upstream_trust import UpstreamTrust
from qonic_proxy.runtime_file import DaemonRecord, RuntimeFile, record_for
from qonic_proxy.sdnotify import Notifier
from qonic_proxy.tokens.outage import whole_seconds
from qonic_proxy.tokens.service import TokenService
from qonic_proxy.tokens.store import TokenStore, cache_key
from qonic_proxy.tokens.timing import SAVE_RETRY_INTERVAL

log = logging.getLogger("qonic_proxy.daemon")

__all__ = ["STREAM_THRESHOLD", "Daemon", "serve"]

SHUTDOWN_GRACE = 30.0  # seconds in-flight requests get to finish after SIGTERM


class Daemon:
    """One running qonic-proxy: the token service plus mitmproxy with our addon."""

    def __init__(
        self,
        cfg: Config,
        *,
        open_browser: Callable[[str], object] | None = webbrowser.open,
        notifier: Notifier | None = None,
        announce_ready: Callable[[str], None] | None = None,
        scripted_browser: bool = False,
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
            on_change=self._report_status, scripted_browser=scripted_browser,
        )
        self.readiness = asyncio.Event()
        self._stop = asyncio.Event()
        self._master: master.Master | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[Any]] = []
        self.started_at = time.monotonic()
        self.audit: AuditLog | None = None

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
        self.trust = upstream_trust(self.cfg)  # mitmproxy and the 401 replay alike
        if self.cfg.access.audit_log is not None:
            self.audit = AuditLog(self.cfg.access.audit_log)
        access = Policy(users=frozenset(self.cfg.access.users),
                        read_only=frozenset(self.cfg.access.read_only),
                        rules=dict(self.cfg.access.rules))
        guard = Guard(allowed_hosts=frozenset(self.cfg.proxy.allowed_hosts),
                      listeners=self.listeners)
        self.addon = QonicAddon(
            api_origin=self.api_origin, tokens=self.tokens, metrics=self.metrics,
            guard=guard, listeners=self.listeners, status_extra=self._listener_status,
            upstream_tls=self.trust.context, key=key, on_running=self.readiness.set,
            access=access, audit=self.audit, config_path=self.cfg.path,
        )
        self.trust.subscribe(self._new_trust)
        self._master = build_master(self.cfg, self.addon, self.trust)
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
            asyncio.get_running_loop().create_task(self._save_retry()),
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
        server: proxyserver.Proxyserver = self._master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
        return server

    def _check_listeners(self) -> None:
        for server in self._proxyserver().servers:
            if not server.is_running:
                forward = server.mode.type_name == "regular"
                which = "forward_port" if forward else "port"
                port = self.cfg.proxy.forward_port if forward else self.cfg.proxy.port
                raise QonicProxyError(
                    f"could not listen on {self.cfg.proxy.listen_host} port {port} for the "
                    f"{'forward' if forward else 'reverse'} listener "
                    f"({_os_reason(server.last_exception)}); "
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

    def runtime_record(self) -> DaemonRecord:
        listeners = self.listeners
        return record_for(self.cfg, str(self.api_origin), listeners.reverse_url,
                          listeners.reverse_port, listeners.forward_url, listeners.forward_port)

    def _listener_status(self) -> dict[str, Any]:
        return {"listeners": {"reverse": self.listeners.reverse_url,
                              "forward": self.listeners.forward_url},
                "api_url": str(self.api_origin), "pid": os.getpid()}

    # ----- status --------------------------------------------------------------------------
    def status_text(self) -> str:
        """One line for `systemctl status`: never a secret, always what to do."""
        outage = self.tokens.unavailable()
        if outage is not None:
            return (f"{outage.headline()}; retrying in "
                    f"{whole_seconds(self.tokens.next_attempt_in())} s")
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
            wait = max(due_in, self.tokens.next_attempt_in())  # after a failure: its back-off
            if wait > 0:
                # wake at least every 10 s: asyncio sleeps on the monotonic clock, which stands
                # still while the machine is suspended, but token expiry is wall-clock time
                await asyncio.sleep(min(wait, 10.0))
                continue
            await self.tokens.refresh(tokens.access_token)
            if self.tokens.tokens is tokens and not self.tokens.next_attempt_in():
                await asyncio.sleep(1)  # nothing changed and no back-off: never spin

    async def _save_retry(self) -> None:
        """Write a token cache that could not be written (disk full, read-only) once it can."""
        while True:
            await asyncio.sleep(SAVE_RETRY_INTERVAL)
            await self.tokens.retry_save()

    # ----- run and stop --------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _new_trust(self, trust: UpstreamTrust) -> None:
        self.addon.upstream_tls = trust.context  # the 401 replay

    def _reload(self) -> None:
        log.info("SIGHUP: re-reading the token cache and the CA certificates")
        if self._master is not None:
            self.trust.reload()
        if self.audit is not None:
            try:
                self.audit.reopen()
            except QonicProxyError as err:
                log.error("%s", err)
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
        await self._warn_unsaved()
        if self.audit is not None:
            self.audit.close()
        self._master.shutdown()  # type: ignore[no-untyped-call]
        if self._run_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._run_task, 10)
        log.info("qonic-proxy stopped (pid %d, up %d s)", os.getpid(),
                 time.monotonic() - self.started_at)


    async def _warn_unsaved(self) -> None:
        """One last save of tokens held only in memory; if it fails too, say so in one line."""
        try:
            await asyncio.wait_for(self.tokens.retry_save(), 10)
        except Exception as err:  # stopping anyway: the line below says what is lost
            log.debug("the last save of the token cache failed: %s", err)
        warning = self.tokens.shutdown_warning()
        if warning is None:
            return
        if log.isEnabledFor(logging.WARNING):
            log.warning("%s", warning)
        else:
            print(f"qonic-proxy: {warning}", file=sys.stderr, flush=True)


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
    runtime = RuntimeFile(cfg)
    runtime.claim()  # "already running for this config" before mitmproxy says anything
    daemon = Daemon(cfg, **kwargs)
    daemon.install_signal_handlers()
    try:
        try:
            await daemon.start()
        except BaseException:
            await daemon.stop(grace=0)
            raise
        runtime.write(daemon.runtime_record())
        await daemon.wait()
        await daemon.stop()
    finally:
        runtime.release()
    return 0
