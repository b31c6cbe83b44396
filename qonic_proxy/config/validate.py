"""Validators for the config values that name places: URLs, addresses and host names.

Each returns the value in the one spelling the rest of the package compares (qonic_proxy.hosts),
or raises the section's ConfigError. URLs are never echoed (they may carry a credential); other
values only through `fields.shown`.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote, urlsplit

from qonic_proxy.config.fields import Section, may_hold_secret, shown
from qonic_proxy.config.model import UpstreamProxy
from qonic_proxy.hosts import authority, canonical_host, is_loopback_host
from qonic_proxy.oauth.redirect import RedirectUriError, parse_loopback_redirect

HTTPS_FIX = ("the token and client secret must not cross the network in clear text, so use the "
             "https URL of the server")
REDIRECT_FIX = "write it like http://localhost:8765/callback and register the same URI in Qonic"


def _has_space_or_control(value: str) -> bool:
    return any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


def https_url(section: Section, key: str, value: str, *, origin_only: bool) -> str:
    """Validate and normalise an https URL; never echo it (it might carry a credential).

    http:// is accepted for a loopback host (a local development server, `sandbox --plain-http`):
    nothing crosses the network there.
    """
    if not value or _has_space_or_control(value):
        raise section.error(key, "the URL is empty or contains spaces", "write a plain https URL")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise section.error(
            key, "is not a valid URL (bad port or brackets)", "write it as https://host[:port]"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise section.error(key, "must use https://", HTTPS_FIX)
    if "@" in parts.netloc:
        raise section.error(
            key, "must not contain a user name or password", "remove the part before '@'"
        )
    if "?" in value or "#" in value:
        raise section.error(key, "must not have a query or fragment", "remove the ?… or #… part")
    host = canonical_host(parts.hostname or "")
    if host is None:
        raise section.error(key, "the host name is missing or invalid", "write https://host[:port]")
    if scheme == "http" and not is_loopback_host(host):
        raise section.error(key, "must use https:// (http:// only for a loopback host)", HTTPS_FIX)
    if port == 0:
        raise section.error(key, "port 0 is not valid", "omit the port or use a real one")
    if origin_only and parts.path not in ("", "/"):
        raise section.error(
            key,
            "must be an origin without a path",
            "write only https://host[:port]; the /v1/... paths are added by the proxy",
        )
    path = "" if origin_only else parts.path
    return f"{scheme}://{authority(host, port, scheme)}{path}"


PROXY_FIX = "write it as http://host:port or http://user:password@host:port"


def upstream_proxy(section: Section, key: str, value: str) -> UpstreamProxy:
    """`http://[user:password@]host:port`, the port given; never echoed (it may hold a password).

    Only http:// (the proxy is spoken to in plain HTTP; the API's TLS runs inside the CONNECT
    tunnel end to end), and nothing after the authority.
    """
    if not value or _has_space_or_control(value):
        raise section.error(key, "the URL is empty or contains spaces", PROXY_FIX)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise section.error(key, "is not a valid URL (bad port or brackets)", PROXY_FIX) from None
    if parts.scheme.lower() != "http":
        raise section.error(key, "must be an http:// proxy URL", PROXY_FIX)
    host = canonical_host(parts.hostname or "")
    if host is None:
        raise section.error(key, "the host name is missing or invalid", PROXY_FIX)
    if not port:
        raise section.error(key, "the port is missing", PROXY_FIX)
    if parts.path not in ("", "/") or "?" in value or "#" in value:
        raise section.error(key, "must not have a path, query or fragment", PROXY_FIX)
    user = password = None
    if "@" in parts.netloc:
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        if not user:
            raise section.error(key, "the user name before ':' is empty", PROXY_FIX)
    return UpstreamProxy(host=host, port=port, user=user, password=password)


def redirect_uri(section: Section, key: str, value: str) -> str:
    """RFC 8252 loopback redirect (the rules of oauth.redirect), kept verbatim.

    User info is refused here first: the redirect rules quote a URI whose scheme or host is
    wrong, and `https://user:pw@…` must not be quoted.
    """
    if may_hold_secret(value):
        raise section.error(key, "must not have user info, a query or a fragment", REDIRECT_FIX)
    try:
        return parse_loopback_redirect(value).uri
    except RedirectUriError as problem:
        raise section.error(key, str(problem), REDIRECT_FIX) from None


def listen_host(section: Section, key: str, value: str) -> tuple[str, bool]:
    """Return the normalised listen address and whether it is loopback."""
    raw = value.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    if raw.lower() == "localhost":
        return "localhost", True
    try:
        address = str(ipaddress.ip_address(raw))
    except ValueError:
        raise section.error(
            key,
            f"{shown(value)} is not an IP address",
            "use an IP address such as 127.0.0.1 or ::1 (or localhost)",
        ) from None
    return address, is_loopback_host(address)


def _host_part(raw: str) -> str:
    """The host of `name`, `name:port`, `[v6]` or `[v6]:port`; "" when the rest is malformed."""
    if raw.startswith("["):
        end = raw.find("]")
        if end <= 0:
            return ""
        rest = raw[end + 1 :]
        return raw[1:end] if not rest or (rest[0] == ":" and rest[1:].isdigit()) else ""
    if raw.count(":") == 1:
        host, _, port = raw.partition(":")
        return host if port.isdigit() else ""
    return raw


def allowed_host(section: Section, key: str, value: str) -> str:
    """Store Host-header names as compared later: lower-case, no brackets, no port."""
    host = canonical_host(_host_part(value.strip().lower()))
    if host is None:
        raise section.error(
            key, f"{shown(value)} is not a host name or IP address", "list names like localhost"
        )
    return host
