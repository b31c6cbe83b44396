"""Logging set-up for every verb, and the loggers of the modules the one-shot verbs import.

`logging` costs 6 ms to import (with traceback, string, threading and weakref), and `token`,
`status`, `env` or `exec` usually log nothing. So `main` only notes the level and format
(`configure_later`), and those modules log through `logger(name)`: a stand-in that imports
`logging`, applies the noted set-up and hands the line on when one is at or above the level;
below it, a line costs a comparison. The daemon's own modules use `logging` directly: it is
loaded there anyway, and its access log should not pay for a stand-in.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40}  # logging's, without logging
LEVELS = tuple(_NUMBERS)
_pending: tuple[str, str] | None = None  # (level, format) noted by configure_later


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Route our and mitmproxy's stdlib logging to stderr now (see log_output.install)."""
    global _pending
    _pending = None
    from qonic_proxy.log_output import install

    install(level, fmt)


def configure_later(level: str, fmt: str) -> None:
    """Set logging up as configure_logging would, once something logs at `level` or above,
    unless logging has been set up by someone else by then (a test's capture, a host program)."""
    global _pending
    _pending = (level, fmt)


def settle() -> None:
    """Apply the noted set-up now: before running code that logs through `logging` itself
    (mitmproxy, asyncio, the OAuth client), so its lines are formatted like ours."""
    _logging()


def _logging() -> Any:
    """The logging module, with the noted set-up applied first if nobody else configured it."""
    global _pending
    import logging

    if _pending is not None:
        level, fmt = _pending
        _pending = None
        if not logging.getLogger().handlers:
            configure_logging(level, fmt)
    return logging


class LazyLogger:
    """`logging.getLogger(name)`, fetched the first time a line passes the noted level."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _log(self, level: int, msg: str, args: tuple[object, ...], kwargs: dict[str, Any],
             ) -> None:
        if (_pending is not None and "logging" not in sys.modules
                and level < _NUMBERS.get(_pending[0], 0)):
            return  # below the level the verb asked for, and nobody else logs
        target: logging.Logger = _logging().getLogger(self.name)
        target.log(level, msg, *args, stacklevel=3, **kwargs)

    def debug(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._log(_NUMBERS["debug"], msg, args, kwargs)

    def info(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._log(_NUMBERS["info"], msg, args, kwargs)

    def warning(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._log(_NUMBERS["warning"], msg, args, kwargs)

    def error(self, msg: str, *args: object, **kwargs: Any) -> None:
        self._log(_NUMBERS["error"], msg, args, kwargs)


def logger(name: str) -> LazyLogger:
    return LazyLogger(name)
