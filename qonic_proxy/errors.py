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


NETWORK_ERROR_CODES = frozenset({"timeout", "connection_refused", "dns", "network", "tls",
                                 "tls_verify"})
TRANSIENT_OAUTH_CODES = frozenset({"temporarily_unavailable", "server_error"})


class TokenEndpointError(QonicProxyError):
    """The token endpoint refused us or answered something we cannot use.

    `transient` says whether trying again later may work (a network failure, HTTP 5xx or 429,
    an OAuth temporarily_unavailable/server_error): such a failure never costs the login.
    `retry_after` is the server's Retry-After in seconds, when it sent one we could read.
    """

    def __init__(self, message: str, *, error_code: str | None = None, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.error_code = error_code
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        if self.error_code in NETWORK_ERROR_CODES or self.error_code in TRANSIENT_OAUTH_CODES:
            return True
        return self.status is not None and (self.status >= 500 or self.status == 429)

    @property
    def reason(self) -> str:
        """The metrics label: `http_<status>` for an HTTP answer, else the error code."""
        if self.status is not None:
            return f"http_{self.status}"
        return self.error_code or "error"
