"""Fault switches for the sandbox's token endpoint, without HTTP: what to do and for how long.

Why: the proxy must be shown to survive an outage of Qonic's token endpoint (an error status,
a request that is never answered, a connection reset) and then recover. A test switches a fault
on for a number of seconds (at start through SandboxSettings, at run time through
`/-/sandbox/faults/token`); every token request in that window gets the fault and is counted, and
afterwards the endpoint answers normally again. The routes only carry the decision out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

TOKEN_FAULT_MODES = ("status", "hang", "reset")
MAX_FAULT_SECONDS = 3600.0
MAX_HANG_SECONDS = 600.0


@dataclass(frozen=True)
class TokenFault:
    """What a token request gets while the fault lasts.

    mode "status": an HTTP `status` (5xx or 429) with a JSON error body and, when `retry_after`
    is set, a `Retry-After: N` header. mode "hang": the request is read and then not answered for
    `hang` seconds (past the client's timeout), after which the connection is closed. mode
    "reset": the connection is reset (RST) instead of an answer.
    """

    mode: str
    seconds: float
    status: int = 503
    retry_after: int | None = None
    hang: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in TOKEN_FAULT_MODES:
            raise ValueError(f"mode must be one of {', '.join(TOKEN_FAULT_MODES)}.")
        if not 0 < self.seconds <= MAX_FAULT_SECONDS:
            raise ValueError(f"seconds must be > 0 and at most {MAX_FAULT_SECONDS:g}.")
        if self.status != 429 and not 500 <= self.status <= 599:
            raise ValueError("status must be 429 or 5xx.")
        if self.retry_after is not None and not 0 <= self.retry_after <= 86400:
            raise ValueError("retry_after must be 0..86400 seconds.")
        if not 0 < self.hang <= MAX_HANG_SECONDS:
            raise ValueError(f"hang must be > 0 and at most {MAX_HANG_SECONDS:g} seconds.")


def token_fault_from(data: Mapping[str, Any]) -> TokenFault:
    """A TokenFault from a JSON object (`mode`, `seconds`, optional `status`, `retry_after`,
    `hang`); ValueError with one sentence when it is not one."""
    allowed = {"mode", "seconds", "status", "retry_after", "hang"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; expected {', '.join(sorted(allowed))}.")
    if "mode" not in data or "seconds" not in data:
        raise ValueError("mode and seconds are required.")
    number = (int, float)
    for key in ("seconds", "hang"):
        value = data.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, number):
            raise ValueError(f"{key} must be a number of seconds.")
    for key in ("status", "retry_after"):
        value = data.get(key, 0)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{key} must be an integer.")
    if not isinstance(data["mode"], str):
        raise ValueError("mode must be a string.")
    return TokenFault(
        mode=data["mode"],
        seconds=float(data["seconds"]),
        status=data.get("status", 503),
        retry_after=data.get("retry_after"),
        hang=float(data.get("hang", 60.0)),
    )


class Faults:
    """The switched-on token fault (at most one), its window, and what arrived during it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._fault: TokenFault | None = None
        self._until = 0.0
        self._hits = 0  # token requests that got the current (or last) fault
        self._released = threading.Event()  # set on stop: hanging requests give up at once

    def set_token_fault(self, fault: TokenFault) -> None:
        """Switch `fault` on for its `seconds` from now (replacing any other); resets the count."""
        with self._lock:
            self._fault, self._until, self._hits = fault, self.clock() + fault.seconds, 0

    def clear_token_fault(self) -> None:
        """Back to normal now (the count of the last fault is kept)."""
        with self._lock:
            self._fault = None

    def on_token_request(self) -> TokenFault | None:
        """The fault this token request gets (and count it), or None: answer normally."""
        with self._lock:
            if self._fault is None:
                return None
            if self.clock() >= self._until:
                self._fault = None
                return None
            self._hits += 1
            return self._fault

    def hold(self, seconds: float) -> None:
        """Wait like a hanging server, but return at once when the sandbox stops."""
        self._released.wait(seconds)

    def release(self) -> None:
        self._released.set()

    def snapshot(self) -> dict[str, Any]:
        """`{"token": {"active": fault or None, "remaining": s, "requests": n}}`."""
        with self._lock:
            remaining = max(0.0, self._until - self.clock()) if self._fault else 0.0
            active = asdict(self._fault) if self._fault and remaining > 0 else None
            return {
                "token": {
                    "active": active,
                    "remaining": round(remaining, 3),
                    "requests": self._hits,
                }
            }
