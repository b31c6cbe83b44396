"""Error types that carry the process exit code, so every user error ends in one clear sentence."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Every exit status the CLI uses (the contract in DESIGN.md), in one place."""

    OK = 0
    FAILURE = 1  # a runtime failure: login denied, token endpoint error, upstream down
    USAGE = 2
    INTERRUPTED = 130  # 128 + SIGINT
    CONFIG = 78  # EX_CONFIG: systemd units do not restart on it


class QonicProxyError(Exception):
    """A failure the user can act on. `str(err)` is the one-line message shown to them."""

    exit_code: ExitStatus = ExitStatus.FAILURE


class UsageError(QonicProxyError):
    """The command line was wrong (exit 2)."""

    exit_code = ExitStatus.USAGE


class ConfigError(QonicProxyError):
    """The configuration is missing or invalid (exit 78, EX_CONFIG: systemd need not restart)."""

    exit_code = ExitStatus.CONFIG


class LoginError(QonicProxyError):
    """The browser login did not complete (denied, timed out, bad callback)."""


class TokenEndpointError(QonicProxyError):
    """The token endpoint refused us or answered something we cannot use."""

    def __init__(self, message: str, *, error_code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.error_code = error_code
        self.status = status
