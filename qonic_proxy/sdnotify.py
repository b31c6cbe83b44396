"""sd_notify: tell systemd when the daemon is ready, what it is doing, and that it is alive.

Implemented with the standard library only (an AF_UNIX datagram per message, as sd_notify(3)
does), so the daemon needs no libsystemd binding. Without ``$NOTIFY_SOCKET`` (not started by
systemd, or by a unit that is not ``Type=notify``) every method is a cheap no-op.

``STATUS=`` text is shown to anyone who may run ``systemctl status``, and ends up in the journal:
callers must never put a token, code, verifier or client secret into it. An authorize URL is fine
(it carries only the public client id, the PKCE *challenge* and the ``state`` value).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# Control characters would break systemd's line-based parser ("\n" starts a new assignment, and
# a NUL ends the datagram's text early); systemd shows STATUS= as one line anyway.
_CONTROL = {c: " " for c in range(32)} | {127: " "}


def _one_line(text: str) -> str:
    return text.translate(_CONTROL).strip()


def _socket_address(value: str) -> str | None:
    """Map $NOTIFY_SOCKET to a socket address, or None when we cannot speak to it.

    "@name" is Linux's abstract namespace, written with a leading NUL byte on the wire.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # e.g. "vsock:..." (systemd 254+, for VMs): not something a local service unit hands us.
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """The watchdog period in microseconds, if systemd asked *this* process for pings."""
    raw = env.get("WATCHDOG_USEC", "").strip()
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.debug("ignoring WATCHDOG_USEC that is not an integer")
        return None
    if usec <= 0:
        return None
    # WATCHDOG_PID says which process the variable was meant for: a child that inherited the
    # environment (e.g. a command started by `qonic-proxy exec`) must not ping on its own.
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec


class Notifier:
    """Sends sd_notify messages; construct it with `Notifier.from_env()`.

    Send failures are never raised (the daemon must not die because systemd went away or the
    socket is unreachable); the first one is logged at debug level, later ones silently.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec if address else None
        self._failure_logged = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from `env`."""
        raw = env.get("NOTIFY_SOCKET", "")
        address = _socket_address(raw) if raw else None
        if raw and address is None:
            log.debug("NOTIFY_SOCKET has an unsupported form; systemd notifications are off")
        return cls(address, _watchdog_usec(env))

    def __repr__(self) -> str:
        return f"Notifier(enabled={self.enabled}, watchdog_interval={self.watchdog_interval})"

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of WATCHDOG_USEC, as sd_watchdog_enabled(3) recommends."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1e6

    def send(self, *assignments: str) -> bool:
        """Send one datagram of "KEY=value" lines; True when it was handed to the socket."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failure_logged:
                self._failure_logged = True
                log.debug("could not notify systemd (%s); further failures are not logged", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """The listeners accept connections: lets `systemctl start` return and ordering proceed."""
        lines = ["READY=1"]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        lines.append(f"MAINPID={os.getpid()}")
        self.send(*lines)

    def status(self, text: str) -> None:
        """A one-line, human-readable state for `systemctl status` (never a secret)."""
        self.send("STATUS=" + _one_line(text))

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        lines = ["STOPPING=1"]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        self.send(*lines)

    def reloading(self) -> None:
        # MONOTONIC_USEC is required by Type=notify-reload (systemd 253+) and harmless elsewhere.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, usec: int) -> None:
        """Ask for more time to start or stop (e.g. a slow first CA generation)."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(usec)}")

    async def run_watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping WATCHDOG=1 every `watchdog_interval` seconds while `healthy()` is true.

        Running on the event loop is the point: a blocked or dead loop stops the pings, and
        systemd then restarts the service. Returns at once when no watchdog was requested;
        cancel the task to stop it.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        warned = False  # log a raising health check once per failure streak, not every tick
        while True:
            try:
                ok = bool(healthy())
            except Exception:
                ok = False
                if not warned:
                    warned = True
                    log.warning("health check failed; withholding watchdog pings", exc_info=True)
            else:
                warned = False
            if ok:
                self.watchdog()
            await asyncio.sleep(interval)
