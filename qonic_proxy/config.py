"""Configuration: TOML file discovery, defaults, validation and client-secret lookup.

The dataclasses below are the contract the rest of the package codes against; `load_config`
turns a file into them or raises ConfigError (exit 78) with one sentence naming file, key and fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class QonicSettings:
    api_url: str  # origin only, e.g. "https://api.qonic.com" (no trailing slash, no path)
    authorize_url: str
    token_url: str
    ca_file: Path | None


@dataclass(frozen=True)
class OAuthSettings:
    client_id: str
    client_secret: str | None = field(repr=False)  # None = public client
    secret_source: str  # "env", "credential", "file", "config" or "none" (never the secret itself)
    scopes: tuple[str, ...]
    redirect_uri: str
    open_browser: bool
    login_timeout: float


@dataclass(frozen=True)
class ProxySettings:
    listen_host: str
    port: int
    forward_port: int  # 0 = forward mode off
    allowed_hosts: tuple[str, ...]
    client_key_file: Path | None
    ca_dir: Path  # mitmproxy confdir: where the interception CA lives


@dataclass(frozen=True)
class TokenSettings:
    cache_file: Path
    refresh_margin: float


@dataclass(frozen=True)
class Config:
    path: Path | None
    qonic: QonicSettings
    oauth: OAuthSettings
    proxy: ProxySettings
    token: TokenSettings
