"""Error types that carry the process exit code, so every user error ends in one clear sentence."""

from __future__ import annotations


class QonicProxyError(Exception):
    """A failure the user can act on. `str(err)` is the one-line message shown to them."""

    exit_code = 1


class UsageError(QonicProxyError):
    """The command line was wrong (exit 2)."""

    exit_code = 2


class ConfigError(QonicProxyError):
    """The configuration is missing or invalid (exit 78, EX_CONFIG: systemd need not restart)."""

    exit_code = 78


class LoginError(QonicProxyError):
    """The browser login did not complete (denied, timed out, bad callback)."""


class TokenEndpointError(QonicProxyError):
    """The token endpoint refused us or answered something we cannot use."""

    def __init__(self, message: str, *, error_code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.error_code = error_code
        self.status = status
