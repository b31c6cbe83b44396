"""Typed readers for one TOML table, and the one way a config value is quoted in a message.

Every error names file, section and key, says what was expected, and how to fix it. A value is
echoed only through `shown`, because config values can carry a password (`https://user:pw@…`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qonic_proxy.errors import ConfigError

MAX_SHOWN = 80  # longer quoted values are cut (paths are not: they must be found)


def may_hold_secret(text: str) -> bool:
    """True when `text` could carry user info (`user:password@`) that must not be echoed."""
    return "@" in text


def shown(value: object, *, quote: bool = True) -> str:
    """`value` as a message may show it: user info masked, control characters escaped, short.

    Everything from the start (or after `://`) up to the last `@` becomes `***`, and a URL's
    query or fragment is dropped, so neither a password nor a token in a query can leak.
    `quote` gives the repr-style quotes used around values; paths are shown without them.
    """
    text = str(value)
    scheme_end = text.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    at = text.rfind("@")
    if at >= start:
        text = f"{text[:start]}***{text[at:]}"
    if scheme_end >= 0:
        cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut] + "?…"
    if quote:
        return repr(text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…")
    return text if text.isprintable() else repr(text)[1:-1]


def missing(path: Path) -> bool:
    """True when nothing is at `path`; a permission error counts as present, so it gets reported."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


# Order matters: a bool is also an int.
_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
)


def toml_type(value: Any) -> str:
    """Name a TOML value's type the way the TOML spec does, for error messages."""
    return next((name for kind, name in _TOML_TYPES if isinstance(value, kind)), "a date/time")


class Section:
    """One TOML table plus the file name, so every error names file, section and key alike."""

    def __init__(self, source: str, name: str, table: Mapping[str, Any], base: Path) -> None:
        self.source = source
        self.name = name
        self.table = table
        self.base = base

    def error(self, key: str, what: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.name}] {key}: {what}; {fix}")

    def has(self, key: str) -> bool:
        return key in self.table

    def _wrong_type(self, key: str, value: Any, expected: str) -> ConfigError:
        return self.error(
            key, f"expected {expected}, got {toml_type(value)}", f"write it as {expected}"
        )

    def string(self, key: str, default: str | None = None) -> str | None:
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, str):
            raise self._wrong_type(key, value, "a string in quotes")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self._wrong_type(key, value, "true or false")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong_type(key, value, "an integer")
        if not low <= value <= high:
            raise self.error(
                key, f"{value} is out of range", f"use an integer from {low} to {high}"
            )
        return value

    def seconds(self, key: str, default: float, *, allow_zero: bool) -> float:
        value = self.table.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._wrong_type(key, value, "a number of seconds")
        bound = ">= 0" if allow_zero else "> 0"
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise self.error(key, f"{value} is not a valid duration", f"use a number {bound}")
        return float(value)

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, list):
            raise self._wrong_type(key, value, "an array of strings")
        for item in value:
            if not isinstance(item, str):
                raise self._wrong_type(key, item, "an array of strings")
        if not value:
            raise self.error(key, "the list is empty", "list at least one entry or remove the key")
        return tuple(value)

    def path(self, key: str, default: Path | None = None) -> Path | None:
        """A file path: `~` expanded, relative paths taken from the config file's directory."""
        raw = self.string(key)
        if raw is None:
            return default
        if not raw.strip() or "\0" in raw:
            raise self.error(key, "the path is empty or malformed", "give a file path or remove it")
        try:
            path = Path(raw).expanduser()
        except RuntimeError:
            raise self.error(
                key, f"cannot expand ~ in {shown(raw)} (no home directory)", "use an absolute path"
            ) from None
        return path if path.is_absolute() else self.base / path

    def readable_file(self, key: str, path: Path, what: str) -> bytes:
        """Read a file the config names, turning OS errors into one sentence."""
        name = shown(path, quote=False)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise self.error(
                key, f"{name} does not exist", f"create it or fix the path to {what}"
            ) from None
        except IsADirectoryError:
            raise self.error(key, f"{name} is a directory", f"point it at {what}") from None
        except OSError as exc:
            raise self.error(
                key, f"cannot read {name} ({exc.strerror or exc})", "let this user read the file"
            ) from None
