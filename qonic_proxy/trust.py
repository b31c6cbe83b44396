"""The one trust decision for every outbound TLS connection: token endpoint, API, 401 replay.

Qonic is one service, so it is verified against one set of roots wherever we reach it: the
system store as OpenSSL finds it (so `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured and a
corporate CA installed system-wide just works), plus certifi's public CAs, plus `[qonic] ca_file`.
`trust_roots` decides; `ssl_context` (Python's own connections) and `write_bundle` (the PEM file
mitmproxy is given) only render that decision. Verification is never switched off.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from qonic_proxy.errors import ConfigError
from qonic_proxy.files import PRIVATE_FILE_MODE, write_atomic
from qonic_proxy.records import record

if TYPE_CHECKING:  # ssl is imported by what connects; `exec` and `env` only name the roots
    import ssl

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")
MAX_CA_DIR_FILES = 10_000  # a hashed CA folder holds a few hundred; never read a huge tree


@record
class TrustRoots:
    """Where the trusted CA certificates come from, in the order they are added."""

    system_file: Path | None
    system_dir: Path | None
    public_file: Path  # certifi
    extra_file: Path | None  # [qonic] ca_file


def trust_roots(ca_file: Path | None) -> TrustRoots:
    """The roots every outbound TLS connection trusts (read at call time, so env changes count)."""
    cafile, capath = _default_verify_paths()
    system_file = Path(cafile) if cafile and os.path.isfile(cafile) else None
    system_dir = Path(capath) if capath and os.path.isdir(capath) else None
    return TrustRoots(system_file, system_dir, _certifi_file(), ca_file)


def _default_verify_paths() -> tuple[str | None, str | None]:
    """`ssl.get_default_verify_paths()`'s file and folder (what OpenSSL uses, SSL_CERT_FILE and
    SSL_CERT_DIR first), taken from `_ssl` as `ssl` itself does, without importing `ssl`.

    With both variables set, OpenSSL's compiled-in paths do not matter, and loading OpenSSL
    (1-3 ms of an `exec`) to learn them is skipped: those are the names OpenSSL reads.
    """
    env_file, env_dir = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if env_file is not None and env_dir is not None:
        return env_file, env_dir
    try:
        import _ssl

        env_file, default_file, env_dir, default_dir = _ssl.get_default_verify_paths()
    except (ImportError, AttributeError, ValueError):  # not CPython's: ask the public module
        import ssl

        paths = ssl.get_default_verify_paths()
        return paths.cafile, paths.capath
    return os.environ.get(env_file, default_file), os.environ.get(env_dir, default_dir)


def _certifi_file() -> Path:
    """certifi's bundle, found without importing certifi when it is a plain file on disk (what
    `certifi.where()` returns then, at the cost of importlib.resources)."""
    spec = importlib.util.find_spec("certifi")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "cacert.pem"
        if candidate.is_file():
            return candidate
    import certifi

    return Path(certifi.where())


def _extra_error(path: Path, exc: BaseException) -> ConfigError:
    reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
    return ConfigError(
        f"cannot load [qonic] ca_file {path} ({reason}); point it at a readable PEM file with "
        "the CA certificate(s)"
    )


def ssl_context(roots: TrustRoots) -> ssl.SSLContext:
    """A client context (hostname checked, TLS ≥ 1.2) that trusts exactly `roots`."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if roots.system_file or roots.system_dir:
        ctx.load_verify_locations(
            cafile=str(roots.system_file) if roots.system_file else None,
            capath=str(roots.system_dir) if roots.system_dir else None,
        )
    ctx.load_verify_locations(cafile=str(roots.public_file))
    if roots.extra_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(roots.extra_file))
        except (OSError, ssl.SSLError) as exc:
            raise _extra_error(roots.extra_file, exc) from None
    return ctx


def _certificates(data: bytes) -> list[bytes]:
    return [match.group(0) for match in _PEM_CERT.finditer(data)]


def _dir_certificates(folder: Path) -> list[bytes]:
    """Every PEM certificate in a hashed CA folder (links resolved), as OpenSSL would find it."""
    found: list[bytes] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)[:MAX_CA_DIR_FILES]
    except OSError:
        return found
    for entry in entries:
        try:
            if entry.is_file():
                found += _certificates(Path(entry.path).read_bytes())
        except OSError:
            continue  # a dangling link or an unreadable file: OpenSSL skips it too
    return found


def pem_bundle(roots: TrustRoots) -> bytes:
    """The roots as one PEM bundle, duplicates dropped (for clients that take a single file)."""
    blocks: list[bytes] = []
    if roots.system_file is not None:
        with contextlib.suppress(OSError):
            blocks += _certificates(roots.system_file.read_bytes())
    if roots.system_dir is not None:
        blocks += _dir_certificates(roots.system_dir)
    blocks += _certificates(roots.public_file.read_bytes())
    if roots.extra_file is not None:
        try:
            extra = _certificates(roots.extra_file.read_bytes())
        except OSError as exc:
            raise _extra_error(roots.extra_file, exc) from None
        if not extra:
            raise _extra_error(roots.extra_file, ValueError("no PEM certificate in it"))
        blocks += extra
    seen: set[bytes] = set()
    unique: list[bytes] = []
    for block in blocks:
        key = b"".join(block.split())
        if key not in seen:
            seen.add(key)
            unique.append(block)
    return b"\n".join(unique) + b"\n"


def write_bundle(roots: TrustRoots, path: Path, *, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Write `pem_bundle(roots)` to `path` atomically (unique temp name, never followed)."""
    return write_pem(path, pem_bundle(roots), mode=mode)


def write_pem(path: Path, content: bytes, *, mode: int = PRIVATE_FILE_MODE) -> Path:
    """Write a bundle's `content` to `path` atomically, unless the file already holds it."""
    try:
        if path.read_bytes() == content:
            return path  # unchanged: do not churn a file a running process may be reading
    except OSError:
        pass
    write_atomic(path, content, mode=mode)
    return path
