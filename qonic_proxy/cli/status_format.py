"""How `status` and `login` word a token's state for people (`status --json` is for machines)."""

from __future__ import annotations

import time
from typing import Any


def describe_expiry(expires_at: float | None) -> str:
    if expires_at is None:
        return "the token's lifetime is unknown"
    remaining = expires_at - time.time()
    if remaining <= 0:
        return "the token has expired"
    return "token valid until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires_at)) \
        + f" ({int(remaining)} s)"


def format_status(report: dict[str, Any]) -> str:
    lines = [
        "logged in" if report["logged_in"] else "NOT logged in: " + report["action"],
        f"  token cache:   {report['cache_file']}",
    ]
    cache = report.get("cache") or {}
    if cache.get("saved") is False:
        lines.append(f"  cache:         NOT SAVED ({cache.get('error')})")
    if report.get("scopes"):
        lines.append(f"  scopes:        {' '.join(report['scopes'])}")
    if report.get("expires_at"):
        lines.append(f"  expiry:        {describe_expiry(report['expires_at'])}")
    lines.append(f"  refresh token: {'yes' if report.get('refresh_token') else 'no'}")
    daemon = report.get("daemon")
    if daemon:
        listeners = daemon.get("listeners") or {}
        lines.append(f"  daemon:        running (pid {daemon.get('pid')}), "
                     f"reverse {listeners.get('reverse')}, "
                     f"forward {listeners.get('forward') or 'off'}")
    else:
        lines.append("  daemon:        not reachable")
    return "\n".join(lines)
