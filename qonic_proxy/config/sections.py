"""One builder per config section: its defaults, and the rules that span its keys.

Each takes the section's typed reader and returns the typed settings of config.model; the
single-value rules live in `validate`, the secret lookup in `secret`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from pathlib import Path

from qonic_proxy.config.fields import Section, shown
from qonic_proxy.config.model import (
    APP_NAME,
    OAuthSettings,
    ProxySettings,
    QonicSettings,
    TokenSettings,
)
from qonic_proxy.config.secret import client_secret
from qonic_proxy.config.validate import (
    allowed_host,
    https_url,
    listen_host,
    redirect_uri,
    upstream_proxy,
)
from qonic_proxy.hosts import LOOPBACK_NAMES
from qonic_proxy.logs import logger
from qonic_proxy.qonic import (
    AUTHORIZE_PATH,
    DEFAULT_API_URL,
    DEFAULT_REDIRECT_URI,
    DEFAULT_SCOPES,
    KNOWN_SCOPES,
    TOKEN_PATH,
)

EXAMPLE_CLIENT_ID = "your-client-id"
DEFAULT_LOGIN_TIMEOUT = 300.0
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_ALLOWED_HOSTS = LOOPBACK_NAMES
DEFAULT_REFRESH_MARGIN = 60.0
WELL_FORMED_SCOPE = re.compile(r"[a-z][a-z0-9_.-]*(:[a-z][a-z0-9_.-]*)*")
NEAR_MISS_EDITS = 2  # "project:read", "models:raed", "Projects:Read" are typos, not new scopes

log = logger("qonic_proxy.config")


def qonic_settings(sec: Section) -> QonicSettings:
    api_url = https_url(
        sec, "api_url", sec.string("api_url", DEFAULT_API_URL) or "", origin_only=True
    )
    urls = {}
    for key, suffix in (("authorize_url", AUTHORIZE_PATH), ("token_url", TOKEN_PATH)):
        raw = sec.string(key)
        urls[key] = api_url + suffix if raw is None else https_url(sec, key, raw, origin_only=False)
    ca_file = sec.path("ca_file")
    if ca_file is not None:
        pem = sec.readable_file("ca_file", ca_file, "a PEM file of CA certificates")
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise sec.error(
                "ca_file",
                f"{shown(ca_file, quote=False)} holds no PEM certificate",
                "point it at a PEM bundle (-----BEGIN CERTIFICATE----- blocks)",
            )
    raw_proxy = sec.string("upstream_proxy")
    via = None if raw_proxy is None else upstream_proxy(sec, "upstream_proxy", raw_proxy)
    return QonicSettings(api_url=api_url, ca_file=ca_file, upstream_proxy=via, **urls)


def check_client_id(sec: Section, client_id: str) -> None:
    """A client ID is one word of printable characters (as Qonic's portal shows it)."""
    if not client_id.strip() or any(ch.isspace() or ord(ch) < 0x20 for ch in client_id):
        raise sec.error(
            "client_id", "is empty or contains spaces", "copy the client ID from Qonic exactly"
        )


def _client_id(sec: Section) -> str:
    client_id = sec.string("client_id")
    if client_id is None:
        raise sec.error(
            "client_id",
            "is missing",
            "set it to your application's client ID from Qonic's developer portal",
        )
    check_client_id(sec, client_id)
    if client_id == EXAMPLE_CLIENT_ID:
        log.warning(
            "%s: [oauth] client_id is still the example placeholder %r; set it to your "
            "application's client ID, or logins will fail",
            sec.source,
            client_id,
        )
    return client_id


def _scopes(sec: Section) -> tuple[str, ...]:
    """Known scopes; an unknown well-formed one is passed on with a warning (Qonic may add
    scopes before we know them), a near miss of a known one or a malformed one is an error."""
    scopes: list[str] = []
    for scope in sec.string_list("scopes", DEFAULT_SCOPES):
        if scope not in KNOWN_SCOPES:
            _unknown_scope(sec, scope)
        if scope not in scopes:
            scopes.append(scope)
    return tuple(scopes)


def _unknown_scope(sec: Section, scope: str) -> None:
    near = [known for known in KNOWN_SCOPES if _edits(scope.lower(), known) <= NEAR_MISS_EDITS]
    if near:
        raise sec.error("scopes", f"unknown scope {shown(scope)} (did you mean {near[0]}?)",
                        f"choose from {' '.join(KNOWN_SCOPES)}")
    if not WELL_FORMED_SCOPE.fullmatch(scope):
        raise sec.error("scopes", f"{shown(scope)} is not a well-formed scope",
                        f"write it like projects:read; known: {' '.join(KNOWN_SCOPES)}")
    log.warning("%s: [oauth] scopes: %s is not a scope qonic-proxy knows (%s); it is requested "
                "as written, so check its spelling if Qonic refuses the login",
                sec.source, shown(scope), " ".join(KNOWN_SCOPES))


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (single-character insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def oauth_settings(sec: Section, env: Mapping[str, str], path: Path | None) -> OAuthSettings:
    client_id = _client_id(sec)
    scopes = _scopes(sec)
    secret, secret_source = client_secret(sec, env, path)
    return OAuthSettings(
        client_id=client_id,
        client_secret=secret,
        secret_source=secret_source,
        scopes=scopes,
        redirect_uri=redirect_uri(
            sec, "redirect_uri", sec.string("redirect_uri", DEFAULT_REDIRECT_URI) or ""
        ),
        open_browser=sec.boolean("open_browser", True),
        login_timeout=sec.seconds("login_timeout", DEFAULT_LOGIN_TIMEOUT, allow_zero=False),
    )


def _platformdirs() -> types.ModuleType:
    """platformdirs, imported only for a default path (it alone costs a few ms per verb)."""
    import platformdirs

    return platformdirs


def proxy_settings(sec: Section) -> ProxySettings:
    host, loopback = listen_host(
        sec, "listen_host", sec.string("listen_host", DEFAULT_LISTEN_HOST) or ""
    )
    port = sec.integer("port", DEFAULT_PORT, 0, 65535)
    forward_port = sec.integer("forward_port", 0, 0, 65535)
    if forward_port and forward_port == port:
        raise sec.error(
            "forward_port",
            f"{forward_port} is the same as [proxy] port",
            "give forward mode its own port, or 0 to turn it off",
        )
    allowed: list[str] = []
    for name in sec.string_list("allowed_hosts", DEFAULT_ALLOWED_HOSTS):
        normalised = allowed_host(sec, "allowed_hosts", name)
        if normalised not in allowed:
            allowed.append(normalised)
    client_key_file = sec.path("client_key_file")
    if not loopback:
        if client_key_file is None:
            raise sec.error(
                "listen_host",
                f"{shown(host)} is not a loopback address",
                "set [proxy] client_key_file so other machines must present a key, "
                "or listen on 127.0.0.1",
            )
        log.warning(
            "%s: [proxy] listen_host %s is not a loopback address: other machines can reach the "
            "proxy and must present the client key; add the names they use to allowed_hosts",
            sec.source,
            host,
        )
    ca_dir = sec.path("ca_dir") or _platformdirs().user_data_path(APP_NAME) / "ca"
    return ProxySettings(
        listen_host=host,
        port=port,
        forward_port=forward_port,
        allowed_hosts=tuple(allowed),
        client_key_file=client_key_file,
        ca_dir=ca_dir,
    )


def token_settings(sec: Section) -> TokenSettings:
    return TokenSettings(
        cache_file=(sec.path("cache_file")
                    or _platformdirs().user_state_path(APP_NAME) / "token.json"),
        refresh_margin=sec.seconds("refresh_margin", DEFAULT_REFRESH_MARGIN, allow_zero=True),
    )
