"""The configuration as the rest of the package sees it: typed, validated, immutable.

`qonic_proxy.config.loader` builds these from a TOML file; everything else only reads them.
"""

from __future__ import annotations

from pathlib import Path

from qonic_proxy.access.rules import RuleSet
from qonic_proxy.hosts import bracket
from qonic_proxy.records import field, record

APP_NAME = "qonic-proxy"
ENV_CONFIG = "QONIC_PROXY_CONFIG"
ENV_SECRET = "QONIC_CLIENT_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_CREDENTIALS = "CREDENTIALS_DIRECTORY"
CREDENTIAL_NAME = "client_secret"
SYSTEM_CONFIG_FILE = Path("/etc/qonic-proxy/config.toml")


@record
class UpstreamProxy:
    """[qonic] upstream_proxy: an HTTP proxy every outbound connection tunnels through (CONNECT).

    The credentials are never part of its repr or str: it is shown as `http://***@host:port`.
    """

    host: str
    port: int
    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{bracket(self.host)}:{self.port}"

    def __str__(self) -> str:
        return f"http://{'***@' if self.user is not None else ''}{self.address}"

    def proxy_authorization(self) -> str | None:
        """The Proxy-Authorization value (Basic) for the CONNECT, or None without credentials."""
        if self.user is None:
            return None
        import base64

        pair = f"{self.user}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


@record
class QonicSettings:
    api_url: str  # origin only, e.g. "https://api.qonic.com" (no trailing slash, no path)
    authorize_url: str
    token_url: str
    ca_file: Path | None
    upstream_proxy: UpstreamProxy | None = None  # None = connect directly


@record
class OAuthSettings:
    client_id: str
    client_secret: str | None = field(repr=False)  # None = public client
    secret_source: str  # "env", "credential", "file", "config" or "none" (never the secret itself)
    scopes: tuple[str, ...]
    redirect_uri: str
    open_browser: bool
    login_timeout: float


@record
class ProxySettings:
    listen_host: str
    port: int
    forward_port: int  # 0 = forward mode off
    allowed_hosts: tuple[str, ...]
    client_key_file: Path | None
    ca_dir: Path  # mitmproxy confdir: where the interception CA lives


@record
class TokenSettings:
    cache_file: Path
    refresh_margin: float


@record
class AccessSettings:
    """[access]: local accounts (uids) besides our own and root, read-only ones, the audit log."""

    users: tuple[int, ...] = ()
    read_only: tuple[int, ...] = ()
    audit_log: Path | None = None
    rules: tuple[tuple[int, RuleSet], ...] = ()  # [access.rules]: (uid, its rule set)


@record
class Config:
    path: Path | None
    qonic: QonicSettings
    oauth: OAuthSettings
    proxy: ProxySettings
    token: TokenSettings
    access: AccessSettings = field(default_factory=AccessSettings)
