"""The proxy's interception CA certificate and the CA bundle handed to wrapped programs.

`ca` and `exec` hand out files the daemon later uses, so a user can install the CA system-wide
before the first `run`. The bundle trusts what every outbound connection of ours trusts (the one
decision in `qonic_proxy.trust`: system store, public CAs) plus the proxy's CA, so one file
verifies both intercepted Qonic calls and tunnelled calls to every other host.
"""

from __future__ import annotations

import os
from pathlib import Path

from qonic_proxy.config.model import Config
from qonic_proxy.digest import sha256
from qonic_proxy.errors import ConfigError, QonicProxyError
from qonic_proxy.files import PUBLIC_FILE_MODE, write_atomic
from qonic_proxy.interception_ca import CA_CERT_FILE, CA_KEY_FILE, MissingCertificate, ensure_ca
from qonic_proxy.records import replace
from qonic_proxy.trust import TrustRoots, trust_roots, write_bundle

PROXY_CA_FILE = CA_CERT_FILE
PROXY_CA_KEY_FILE = CA_KEY_FILE
BUNDLE_FILE = "ca-bundle.pem"
SOURCES_FILE = ".ca-bundle.sources"  # what the bundle was made from (names, sizes, times)


def _sources(roots: TrustRoots) -> bytes:
    """A digest of every file the bundle is made from, by stat alone (a hashed CA folder holds
    hundreds of files: reading them all on every `exec` costs more than the rest of it)."""
    seen = sha256()
    files: list[Path | str | None] = [roots.system_file, roots.public_file, roots.extra_file]
    if roots.system_dir is not None:
        try:  # plain strings: hundreds of Path objects cost more than their stat calls
            files += sorted(entry.path for entry in os.scandir(roots.system_dir))
        except OSError:
            files.append(roots.system_dir)
    for path in files:
        try:
            info = os.stat(path) if path is not None else None
        except OSError:
            info = None
        facts = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns) if info else ()
        seen.update(f"{path}\0{facts}\n".encode())
    return seen.hexdigest().encode()


def ca_certificate(cfg: Config) -> str:
    """Path of the proxy's interception CA certificate (made, for the API host, if needed)."""
    try:
        return str(ensure_ca(cfg.proxy.ca_dir, cfg.qonic.api_url))
    except MissingCertificate as err:
        raise QonicProxyError(f"{err} holds no certificate; delete it to make a new CA") from None
    except OSError as err:
        if err.filename and Path(err.filename).parent == cfg.proxy.ca_dir:
            raise _proxy_ca_error(Path(err.filename), err.strerror) from None
        raise QonicProxyError(
            f"cannot create the proxy's CA certificate in {cfg.proxy.ca_dir} "
            f"({err.strerror or type(err).__name__}); make that folder writable for this user "
            "or set [proxy] ca_dir in the config"
        ) from None


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
    roots = replace(trust_roots(None), extra_file=proxy_ca)
    sources, stamp = _sources(roots), cfg.proxy.ca_dir / SOURCES_FILE
    try:
        if bundle.is_file() and stamp.read_bytes() == sources:
            return str(bundle)  # nothing it is made from changed since it was written
    except OSError:
        pass
    try:
        write_bundle(roots, bundle, mode=PUBLIC_FILE_MODE)
        write_atomic(stamp, sources)
    except ConfigError:  # the proxy CA vanished or was emptied since it was checked
        raise _proxy_ca_error(proxy_ca, "no certificate in it") from None
    except OSError as err:
        raise QonicProxyError(f"cannot write {bundle} ({err.strerror}); make {bundle.parent} "
                              "writable for this user") from None
    return str(bundle)
