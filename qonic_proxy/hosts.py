"""Host names, addresses and origins: the one spelling every comparison and URL uses.

The token decision compares origins, the Host guard compares names, the config validates
them, and every URL we print brackets IPv6 literals: all of it goes through here, so a name
cannot be spelled one way where it is checked and another where it is used.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from qonic_proxy.records import record

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_PORTS = {"http": 80, "https": 443}
INVALID_HOST = "\0invalid"  # compares unequal to every real host

# One DNS label: letters, digits, hyphens inside, underscores tolerated for internal names.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def normalise_host(host: str) -> str:
    """Lower-case, no trailing dot, IDNA (xn--) form: the one spelling we compare.

    mitmproxy hands us IDNA hosts decoded to Unicode while the config stores the xn-- form, so
    both sides go through here; a name that cannot be encoded becomes INVALID_HOST.
    """
    host = host.strip().rstrip(".").lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return INVALID_HOST
    return host


def canonical_host(host: str) -> str | None:
    """A valid IP literal or DNS name in canonical form (IDNA, lower case); None if invalid."""
    host = host.strip().lower()
    if not host:
        return None
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            return None
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        return None
    return host


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    """True for "localhost" and loopback IP literals: the only places we listen by default."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bracket(host: str) -> str:
    """A host as it stands in a URL or Host header: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def authority(host: str, port: int | None, scheme: str) -> str:
    """host[:port] as a URL spells it, the scheme's default port left out."""
    shown = bracket(host)
    return shown if port in (None, DEFAULT_PORTS.get(scheme)) else f"{shown}:{port}"


_PORT = re.compile(r"^[0-9]{1,5}$")


def parse_host_header(value: str) -> tuple[str, int | None] | None:
    """A Host header (`name`, `name:port`, `[v6]`, `[v6]:port`) as (canonical host, port).

    None for anything else: whitespace or control characters anywhere, brackets around
    something that is not an IPv6 address (`[localhost]`), text after the closing bracket
    (`[::1]evil.example`), an unbracketed IPv6 address, an empty or non-numeric port, a port
    above 65535, or a name that is not a valid DNS name or IPv4 address. One trailing dot of a
    name is dropped (`localhost.` is `localhost`).
    """
    if not value or not value.isascii() or any(c <= " " or c == "\x7f" for c in value):
        return None
    if value.startswith("["):
        inside, closed, rest = value[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    else:
        name, colon, port_text = value.partition(":")
        rest = colon + port_text
        if ":" in port_text:  # an unbracketed IPv6 address, or two ports
            return None
        canonical = canonical_host(name[:-1] if name.endswith(".") else name)
        if canonical is None or ":" in canonical:
            return None
        host = canonical
    if not rest:
        return host, None
    port = rest[1:]
    if not _PORT.match(port) or int(port) > 65535:
        return None
    return host, int(port)


def connect_host(listen_host: str) -> str:
    """The address a local client uses for a listener bound to `listen_host`, URL-ready."""
    if listen_host in ("0.0.0.0", ""):  # noqa: S104 - we connect, we do not bind
        return "127.0.0.1"
    if listen_host == "::":
        return "[::1]"
    return bracket(listen_host)


def display_url(url: str) -> str:
    """A URL as shown in messages: no user info, query or fragment (they may hold secrets)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = bracket(parts.hostname or "") + (f":{port}" if port else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


@record
class Origin:
    """scheme, host and port of a URL, normalised for exact comparison."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        default = DEFAULT_PORTS.get(scheme, 80)
        return cls(scheme, normalise_host(parts.hostname or ""), parts.port or default)

    @property
    def authority(self) -> str:
        """host[:port] as a Host header spells it (the default port left out)."""
        return authority(self.host, self.port, self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"
