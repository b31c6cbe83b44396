"""The roots API connections trust, re-read when `[qonic] ca_file` changes or on SIGHUP.

The token requests build their TLS context per request, so a renewed CA counts there at once.
mitmproxy instead caches one client context per trust-bundle *path*, so a changed bundle is
written under a new name (its content hash) and the option pointed at it; the 401 replay gets a
new `ssl.SSLContext` at the same moment. Whether the file changed is a single `stat` (inode,
size, mtime), done when mitmproxy starts TLS with the API, so the check costs nothing between
connections and a change counts from the next new connection on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from qonic_proxy.errors import ConfigError
from qonic_proxy.trust import TrustRoots, pem_bundle, ssl_context, trust_roots, write_pem

log = logging.getLogger("qonic_proxy.proxy")

BUNDLE_PREFIX = "upstream-trust-"  # beside the interception CA in [proxy] ca_dir

Stamp = tuple[int, int, int, int] | None


def write_hashed_bundle(roots: TrustRoots, folder: Path) -> Path:
    """Write `pem_bundle(roots)` as `upstream-trust-<hash>.pem` in `folder` (once per content):
    the PEM mitmproxy verifies Qonic with, the same roots as every other connection.

    mitmproxy's option *replaces* its trust store, so the whole decision is written out, always.
    """
    content = pem_bundle(roots)
    path = folder / f"{BUNDLE_PREFIX}{hashlib.sha256(content).hexdigest()[:16]}.pem"
    return write_pem(path, content)


def _stamp(path: Path | None) -> Stamp:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class UpstreamTrust:
    """The current trust bundle (for mitmproxy) and SSL context (for the 401 replay)."""

    def __init__(self, ca_file: Path | None, folder: Path) -> None:
        self.ca_file = ca_file
        self.folder = folder
        self._stamp = _stamp(ca_file)
        self.roots = trust_roots(ca_file)  # a bad ca_file at start-up is a ConfigError
        self.bundle = write_hashed_bundle(self.roots, folder)
        self.context: ssl.SSLContext = ssl_context(self.roots)
        self._listeners: list[Callable[[UpstreamTrust], None]] = []
        self._drop_other_bundles(keep={self.bundle})

    def subscribe(self, listener: Callable[[UpstreamTrust], None]) -> None:
        """`listener(self)` runs after each change of bundle and context."""
        self._listeners.append(listener)

    def check(self) -> bool:
        """Reload if `ca_file` looks changed since the last look; True when the trust changed."""
        if _stamp(self.ca_file) == self._stamp:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Re-read the roots now (SIGHUP, or a changed file); True when they changed.

        A ca_file that cannot be used (mid-write, deleted, no certificate) is logged once and
        the previous trust stays, so API connections keep working with the old CA.
        """
        self._stamp = _stamp(self.ca_file)
        try:
            roots = trust_roots(self.ca_file)
            bundle = write_hashed_bundle(roots, self.folder)
            context = ssl_context(roots)
        except (ConfigError, OSError) as err:
            log.error("%s; API connections keep trusting the previous CA certificates", err)
            return False
        if bundle == self.bundle:
            return False
        previous, self.bundle, self.context, self.roots = self.bundle, bundle, context, roots
        self._drop_other_bundles(keep={previous, bundle})
        log.info("the CA certificates trusted for the API changed (%s); new connections to the "
                 "API use them", self.ca_file or "system store")
        for listener in self._listeners:
            listener(self)
        return True

    def _drop_other_bundles(self, keep: set[Path]) -> None:
        """Remove older bundles; the previous one stays, a connection may be reading it."""
        with contextlib.suppress(OSError):
            for path in self.folder.glob(f"{BUNDLE_PREFIX}*.pem"):
                if path not in keep:
                    path.unlink(missing_ok=True)
