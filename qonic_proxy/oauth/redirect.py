"""The loopback redirect URI (RFC 8252 section 7.3): one set of rules for config and callback.

The config validates `[oauth] redirect_uri` with `parse_loopback_redirect`, and the callback
server listens where the same parse says: the rules cannot drift apart. The URI itself is kept
verbatim, because Qonic compares it byte for byte with the registered one.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from qonic_proxy.hosts import LOOPBACK_NAMES
from qonic_proxy.records import record


class RedirectUriError(ValueError):
    """What is wrong with a redirect URI; the text may quote it only where that is safe."""


@record
class LoopbackRedirect:
    uri: str  # verbatim, as registered with Qonic
    host: str  # "localhost", "127.0.0.1" or "::1"
    port: int
    path: str

    @property
    def listen_hosts(self) -> tuple[str, ...]:
        """Addresses the callback must listen on (the first is required)."""
        return ("127.0.0.1",) if self.host == "localhost" else (self.host,)

    @property
    def optional_listen_hosts(self) -> tuple[str, ...]:
        """Addresses worth listening on too: "localhost" may resolve to ::1 in the browser."""
        return ("::1",) if self.host == "localhost" else ()


def parse_loopback_redirect(value: str) -> LoopbackRedirect:
    """http, a loopback host, an explicit port and a path; RedirectUriError otherwise."""
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise RedirectUriError("contains spaces or control characters")
    if "@" in value or "?" in value or "#" in value:
        # Checked first, so no later message quotes it: user info or a query may hold a password.
        raise RedirectUriError("must not have user info, a query or a fragment")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise RedirectUriError(f"{value!r} is not a valid URL") from None
    if parts.scheme.lower() != "http":
        raise RedirectUriError(f"{value!r} must use http:// (the callback is served on loopback)")
    host = (parts.hostname or "").lower()
    if host not in LOOPBACK_NAMES:
        raise RedirectUriError(f"{value!r} must be on localhost, 127.0.0.1 or [::1] (RFC 8252)")
    if port is None or port == 0:
        raise RedirectUriError(f"{value!r} needs an explicit port")
    if not parts.path.startswith("/"):
        raise RedirectUriError(f"{value!r} needs a path such as /callback")
    return LoopbackRedirect(uri=value, host=host, port=port, path=parts.path)
