"""The files wget, PHP and Java are given: contents, privacy, refresh on a new bundle."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives.serialization import pkcs12

from qonic_proxy.sandbox.certs import make_server_tls
from qonic_proxy.wrap.runtimes import JAVA_STORE_FILE, runtime_environment


def _bundle(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "ca"
    folder.mkdir(mode=0o700, exist_ok=True)
    bundle = folder / "ca-bundle.pem"
    bundle.write_bytes(make_server_tls(tmp_path / name).ca_file.read_bytes())
    return bundle


def test_files_follow_the_bundle_and_keep_the_users_wgetrc(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "one")
    (tmp_path / ".wgetrc").write_text("http_user = me\n")
    env = runtime_environment({"HOME": str(tmp_path)}, "http://127.0.0.1:8081", str(bundle))
    wgetrc = Path(env["WGETRC"])
    assert wgetrc.read_text() == ("http_user = me\n# added by qonic-proxy: trust the proxy's CA "
                                  f"bundle\nca_certificate = {bundle}\n")
    assert stat.S_IMODE(wgetrc.stat().st_mode) == 0o600  # the user's rc may hold a password
    assert env["PHP_INI_SCAN_DIR"] == f":{bundle.parent / 'php.d'}"  # default conf.d first
    ini = (bundle.parent / "php.d" / "qonic-proxy.ini").read_text()
    assert f'curl.cainfo = "{bundle}"' in ini and f'openssl.cafile = "{bundle}"' in ini
    assert "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=8081" in env["JAVA_TOOL_OPTIONS"]
    store = bundle.parent / JAVA_STORE_FILE
    first = store.read_bytes()
    assert len(pkcs12.load_pkcs12(first, None).additional_certs) == 1

    again = runtime_environment({"HOME": str(tmp_path), **env}, "http://127.0.0.1:8081",
                                str(bundle))
    assert again == env  # nested exec: nothing doubled
    bundle.write_bytes(make_server_tls(tmp_path / "two").ca_file.read_bytes())
    runtime_environment({"HOME": str(tmp_path)}, "http://127.0.0.1:8081", str(bundle))
    assert store.read_bytes() != first  # a new proxy CA reaches the Java store
