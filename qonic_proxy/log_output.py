"""Where log lines go: stderr, as human text or one JSON object per line (journald, machines).

Imported only when something is about to log (see `logs`)."""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; structured `extra=` fields are kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:  # log.exception(): keep the traceback, still on one line
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def install(level: str, fmt: str) -> None:
    """Route our and mitmproxy's stdlib logging to stderr.

    mitmproxy logs every client connect/disconnect at info: we keep its loggers at warning
    unless debug was asked for, so the access log stays one line per request.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Never mitmproxy's DEBUG: it hex-dumps raw request bytes, which can hold a client key.
    logging.getLogger("mitmproxy").setLevel("INFO" if level == "debug" else "WARNING")
