"""The proxy's interception CA certificate and the CA bundle handed to wrapped programs.

`ca` and `exec` hand out files the daemon later uses, so a user can install the CA system-wide
before the first `run`. The bundle trusts what every outbound connection of ours trusts (the one
decision in `qonic_proxy.trust`: system store, public CAs) plus the proxy's CA, so one file
verifies both intercepted Qonic calls and tunnelled calls to every other host.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from qonic_proxy.config.model import Config
from qonic_proxy.errors import ConfigError, QonicProxyError
from qonic_proxy.files import PUBLIC_FILE_MODE, ensure_private_dir, exclusive_lock, write_atomic
from qonic_proxy.trust import trust_roots, write_bundle

PROXY_CA_FILE = "mitmproxy-ca-cert.pem"  # mitmproxy's name for the public CA certificate
PROXY_CA_KEY_FILE = "mitmproxy-ca.pem"  # key + certificate; mitmproxy regenerates all without it
BUNDLE_FILE = "ca-bundle.pem"
LOCK_FILE = ".ca.lock"

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


def ca_certificate(cfg: Config) -> str:
    """Path of the proxy's interception CA certificate, created (not the proxy) if missing."""
    ca_dir = cfg.proxy.ca_dir
    cert = ca_dir / PROXY_CA_FILE
    if cert.is_file() and (ca_dir / PROXY_CA_KEY_FILE).is_file():
        return str(cert)
    try:
        ensure_private_dir(ca_dir)
        with exclusive_lock(ca_dir / LOCK_FILE):  # two first-time `exec`s must not make two CAs
            if not (ca_dir / PROXY_CA_KEY_FILE).is_file():
                _create_ca(ca_dir)
            elif not cert.is_file():  # someone deleted only the public half: restore it
                _restore_certificate(ca_dir / PROXY_CA_KEY_FILE, cert)
    except OSError as err:
        raise QonicProxyError(
            f"cannot create the proxy's CA certificate in {ca_dir} "
            f"({err.strerror or type(err).__name__}); make that folder writable for this user "
            "or set [proxy] ca_dir in the config"
        ) from None
    return str(cert)


def _create_ca(ca_dir: Path) -> None:
    """mitmproxy makes the CA exactly as the daemon would (imported here only: it is heavy)."""
    from mitmproxy import certs, options

    key_size = getattr(options, "KEY_SIZE", 2048)
    certs.CertStore.from_store(ca_dir, "mitmproxy", key_size)


def _restore_certificate(combined: Path, cert: Path) -> None:
    match = _PEM_CERT.search(combined.read_bytes())
    if match is None:
        raise QonicProxyError(f"{combined} holds no certificate; delete it to make a new CA")
    write_atomic(cert, match.group(0) + b"\n", mode=PUBLIC_FILE_MODE)


def _proxy_ca_error(path: Path, reason: object) -> QonicProxyError:
    return QonicProxyError(f"cannot read the proxy CA {path} ({reason}); check its permissions")


def ca_bundle(cfg: Config) -> str:
    """Write `ca_dir/ca-bundle.pem` = system + public CAs + the proxy CA; return its path.

    Duplicates are dropped. An unchanged bundle is not rewritten: other children may be reading
    it right now. Certificates are public (0644); the 0700 folder limits access anyway.
    """
    proxy_ca = Path(ca_certificate(cfg))
    try:
        proxy_ca.read_bytes()  # our own file: say so when it is unreadable, not "[qonic] ca_file"
    except OSError as err:
        raise _proxy_ca_error(proxy_ca, err.strerror) from None
    bundle = cfg.proxy.ca_dir / BUNDLE_FILE
    roots = dataclasses.replace(trust_roots(None), extra_file=proxy_ca)
    try:
        write_bundle(roots, bundle, mode=PUBLIC_FILE_MODE)
    except ConfigError:  # the proxy CA vanished or was emptied since it was checked
        raise _proxy_ca_error(proxy_ca, "no certificate in it") from None
    except OSError as err:
        raise QonicProxyError(f"cannot write {bundle} ({err.strerror}); make {bundle.parent} "
                              "writable for this user") from None
    return str(bundle)
