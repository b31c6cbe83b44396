"""What runtimes that ignore the conventional variables need, written beside the CA bundle.

- wget (Debian's GnuTLS build) ignores SSL_CERT_FILE: a WGETRC with `ca_certificate`. WGETRC
  replaces `~/.wgetrc`, so the user's own file (or their $WGETRC) is copied in first; it may hold
  passwords, so ours is 0600 like every file here.
- PHP's curl extension uses libcurl's built-in CA path: an ini with `curl.cainfo` and
  `openssl.cafile` in a folder of ours, added through PHP_INI_SCAN_DIR. Its leading `:` keeps
  PHP's default conf.d (without it the curl extension itself is not loaded).
- Java ignores the proxy variables and trusts only its cacerts: JAVA_TOOL_OPTIONS with the
  proxy host/port and a PKCS12 trust store (system + public roots + the proxy CA) that we write
  ourselves (`java_truststore`). The JDK sends loopback hosts direct, as NO_PROXY does for the
  others. The user's own JAVA_TOOL_OPTIONS come first; later -D options win, so ours decide.
Every file is derived from the bundle and rewritten only when the bundle's content changed, so a
new proxy CA reaches all of them and a program reading one never sees it half-written.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from qonic_proxy.digest import sha256
from qonic_proxy.files import ensure_private_dir, write_atomic

WGETRC_FILE = "wgetrc"
PHP_INI_DIR = "php.d"
PHP_INI_FILE = "qonic-proxy.ini"
JAVA_STORE_FILE = "java-truststore.p12"
_PEM_BODY = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----")
JAVA_NON_PROXY = "localhost|127.*|[::1]"  # the reverse listener is reached directly
JAVA_FIRST_OPTION = "-Dhttp.proxyHost="  # ours start here and end with the next one
JAVA_LAST_OPTION = "-Djavax.net.ssl.trustStoreType=PKCS12"


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data)


def _user_wgetrc(base: Mapping[str, str], ours: Path) -> bytes:
    """The rc file wget would read without us ($WGETRC, else ~/.wgetrc), or nothing."""
    named = base.get("WGETRC") or (str(Path(base["HOME"]) / ".wgetrc") if base.get("HOME")
                                   else None)
    if named is None or Path(named) == ours:
        return b""  # none, or already ours (a nested exec, or `env` in a shell that ran it)
    try:
        return Path(named).read_bytes()
    except OSError:
        return b""


def write_wgetrc(folder: Path, bundle: str, base: Mapping[str, str]) -> Path:
    path = folder / WGETRC_FILE
    own = _user_wgetrc(base, path)
    text = own.rstrip(b"\n") + b"\n" if own.strip() else b""
    text += f"# added by qonic-proxy: trust the proxy's CA bundle\nca_certificate = {bundle}\n"\
        .encode()
    _write_if_changed(path, text)
    return path


def write_php_ini(folder: Path, bundle: str) -> Path:
    ini_dir = folder / PHP_INI_DIR
    ensure_private_dir(ini_dir)
    _write_if_changed(ini_dir / PHP_INI_FILE,
                      f'; written by qonic-proxy\ncurl.cainfo = "{bundle}"\n'
                      f'openssl.cafile = "{bundle}"\n'.encode())
    return ini_dir


def write_java_truststore(folder: Path, bundle: str) -> Path:
    """A password-less PKCS12 trust store of every certificate in `bundle`."""
    path = folder / JAVA_STORE_FILE
    pem = Path(bundle).read_bytes()
    made_from, digest = folder / f".{JAVA_STORE_FILE}.source", sha256(pem).digest()
    with contextlib.suppress(OSError):
        if path.is_file() and made_from.read_bytes() == digest:
            return path  # made from this very bundle: encoding it again costs ~40 ms
    import base64  # only to make the store again

    from qonic_proxy.wrap.java_truststore import java_truststore

    blocks = _PEM_BODY.findall(pem)
    # PEM is base64 of the DER: no parsing, so an odd system root (a negative serial) is kept
    _write_if_changed(path, java_truststore(base64.b64decode(b"".join(b.split()))
                                            for b in blocks))
    write_atomic(made_from, digest)
    return path


def java_options(forward: str, store: Path) -> str:
    """-D options for the JDK's proxy selector and trust store (forward = http://host:port)."""
    parts = urlsplit(forward)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if ":" in host:
        host = f"[{host}]"
    options = [f"-D{scheme}.proxy{field}={value}" for scheme in ("http", "https")
               for field, value in (("Host", host), ("Port", port))]
    options += [f"-Dhttp.nonProxyHosts={JAVA_NON_PROXY}",
                f"-Djavax.net.ssl.trustStore={store}", JAVA_LAST_OPTION]
    return " ".join(options)


def runtime_environment(base: Mapping[str, str], forward: str, bundle: str,
                        ) -> dict[str, str]:
    """WGETRC, PHP_INI_SCAN_DIR and JAVA_TOOL_OPTIONS for a child (files written as needed)."""
    folder = Path(bundle).parent
    store = write_java_truststore(folder, bundle)
    ini_dir = write_php_ini(folder, bundle)
    scan = base.get("PHP_INI_SCAN_DIR", "")
    scan_dirs = scan.split(os.pathsep) if scan else [""]  # "" = PHP's default conf.d
    if str(ini_dir) not in scan_dirs:
        scan_dirs.append(str(ini_dir))
    own_java = base.get("JAVA_TOOL_OPTIONS", "").strip()
    ours = java_options(forward, store)
    if own_java.endswith(ours):  # already ours (a nested exec)
        own_java = own_java[: -len(ours)].strip()
    return {
        "WGETRC": str(write_wgetrc(folder, bundle, base)),
        "PHP_INI_SCAN_DIR": os.pathsep.join(scan_dirs),
        "JAVA_TOOL_OPTIONS": f"{own_java} {ours}".strip(),
    }
