"""The sections and keys a config file may have; anything else is an error with a suggestion.

A typo must not be silently ignored (a misspelt `client_key_file` would leave the proxy open),
so unknown sections and keys are refused, naming the closest valid one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from qonic_proxy.config.fields import shown, toml_type
from qonic_proxy.errors import ConfigError

KEYS: dict[str, tuple[str, ...]] = {
    "qonic": ("api_url", "authorize_url", "token_url", "ca_file", "upstream_proxy"),
    "oauth": (
        "client_id",
        "client_secret_file",
        "client_secret",
        "scopes",
        "redirect_uri",
        "open_browser",
        "login_timeout",
    ),
    "proxy": ("listen_host", "port", "forward_port", "allowed_hosts", "client_key_file", "ca_dir"),
    "token": ("cache_file", "refresh_margin"),
    "access": ("users", "read_only", "audit_log", "rules"),
}


def all_keys() -> list[str]:
    return [key for keys in KEYS.values() for key in keys]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean X?)" for the closest of `choices`, or "" when none is close."""
    import difflib  # only to name a near miss

    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def check_unknown(source: str, data: Mapping[str, Any]) -> None:
    """Refuse sections and keys that are not in KEYS, and sections that are not tables."""
    sections = ", ".join(f"[{name}]" for name in KEYS)
    for name, table in data.items():
        label = shown(name, quote=False)
        if name not in KEYS:
            if isinstance(table, dict):
                raise ConfigError(
                    f"{source}: [{label}]: unknown section{did_you_mean(name, KEYS)}; "
                    f"the sections are {sections}"
                )
            raise ConfigError(
                f"{source}: {label}: unknown top-level key{did_you_mean(name, all_keys())}; "
                f"every key belongs in one of the sections {sections}"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{source}: [{name}]: expected a table, got {toml_type(table)}; "
                f"write it as a [{name}] section header followed by its keys"
            )
        for key in table:
            if key not in KEYS[name]:
                raise ConfigError(
                    f"{source}: [{name}] {shown(key, quote=False)}: unknown key"
                    f"{did_you_mean(key, KEYS[name])}; "
                    f"the keys of [{name}] are {', '.join(KEYS[name])}"
                )
