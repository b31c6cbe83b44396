"""`qonic-proxy ca [--bundle]`: the proxy's CA and the bundle that adds it to the trusted roots."""

from __future__ import annotations

import shutil
import ssl
import stat
from pathlib import Path

import certifi
import pytest

from qonic_proxy.config.loader import load_config
from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.interception_ca import ensure_ca
from qonic_proxy.records import replace
from qonic_proxy.sandbox.certs import make_server_tls
from qonic_proxy.trust import pem_bundle, trust_roots
from qonic_proxy.wrap.ca_files import (
    BUNDLE_FILE,
    PROXY_CA_FILE,
    PROXY_CA_KEY_FILE,
    ca_bundle,
    ca_certificate,
)
from tests.cli.helpers import write_config
from tests.wrap.exec_world import World, echo_ok, pem_certificates


def test_ca_verbs_print_existing_files_and_the_daemon_uses_that_ca(world: World) -> None:
    config = world.write_config("ca.toml", ca_dir="fresh-ca")
    ca_dir = world.tmp / "fresh-ca"
    assert not ca_dir.exists()

    first = world.cli("ca", config=config)
    assert first.returncode == 0, first.stderr
    cert = Path(first.stdout.strip())
    assert cert == ca_dir / "mitmproxy-ca-cert.pem"
    assert cert.is_file()
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "mitmproxy-ca.pem").stat().st_mode) == 0o600
    again = world.cli("ca", config=config)
    assert again.stdout == first.stdout
    assert pem_certificates(cert) == pem_certificates(Path(again.stdout.strip()))

    bundled = world.cli("ca", "--bundle", config=config)
    assert bundled.returncode == 0, bundled.stderr
    bundle = Path(bundled.stdout.strip())
    assert bundle == ca_dir / "ca-bundle.pem"
    certs = pem_certificates(bundle)
    assert pem_certificates(cert)[0] in certs
    assert set(pem_certificates(Path(certifi.where()))) <= set(certs)
    assert len(certs) == len(set(certs))

    # The CA `ca` made before any daemon ran is the one the proxy then signs with.
    result = world.exec("curl", "-sf", "--max-time", "20", "--cacert", str(cert),
                        world.api + "/v1/echo", config=config)
    assert result.returncode == 0, result.stderr
    assert echo_ok(result.stdout)


def test_bundle_includes_the_system_store(world: World, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    corporate = make_server_tls(tmp_path / "corp", ips=("127.0.0.1",)).ca_file
    system = tmp_path / "system.crt"
    system.write_bytes(Path(certifi.where()).read_bytes() + corporate.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(system))  # the system store, as trust_roots finds it
    cfg = load_config(world.config)
    cfg = replace(cfg, proxy=replace(cfg.proxy, ca_dir=tmp_path / "ca"))
    bundle = Path(ca_bundle(cfg))
    certs = pem_certificates(bundle)
    assert pem_certificates(corporate)[0] in certs
    assert pem_certificates(Path(ca_certificate(cfg)))[0] in certs
    assert len(certs) == len(set(certs))  # certifi's roots were in both sources: kept once
    ssl.create_default_context(cafile=str(bundle))  # every block parses


# ----- units -------------------------------------------------------------------------------------
def existing_ca(tmp_path: Path) -> tuple[Config, Path]:
    """A config whose proxy CA exists already (no mitmproxy needed), and a copy of that CA."""
    cfg = load_config(write_config(tmp_path))
    ca = tmp_path / "ca-copy.pem"
    shutil.copy(ensure_ca(cfg.proxy.ca_dir, cfg.qonic.api_url), ca)
    return cfg, ca


def test_bundle_is_the_trust_decision_plus_the_proxy_ca(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, ca = existing_ca(tmp_path)
    system = make_server_tls(tmp_path / "system").ca_file
    monkeypatch.setenv("SSL_CERT_FILE", str(system))
    bundle = Path(ca_bundle(cfg))
    assert bundle == cfg.proxy.ca_dir / BUNDLE_FILE
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o644  # certificates are public
    expected = pem_bundle(replace(trust_roots(None), extra_file=ca))
    assert bundle.read_bytes() == expected
    assert pem_certificates(system)[0] in pem_certificates(bundle)
    inode = bundle.stat().st_ino
    assert ca_bundle(cfg) == str(bundle)
    assert bundle.stat().st_ino == inode  # unchanged: not rewritten under a reader


def test_a_lost_public_half_is_restored_from_the_key_file(tmp_path: Path) -> None:
    cfg, ca = existing_ca(tmp_path)
    (cfg.proxy.ca_dir / PROXY_CA_FILE).unlink()
    cert = Path(ca_certificate(cfg))
    assert pem_certificates(cert) == pem_certificates(ca)
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    (cfg.proxy.ca_dir / PROXY_CA_FILE).unlink()
    (cfg.proxy.ca_dir / PROXY_CA_KEY_FILE).write_text("no certificate here\n")
    with pytest.raises(QonicProxyError, match="holds no certificate; delete it"):
        ca_certificate(cfg)


def test_an_unreadable_proxy_ca_is_named(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _ = existing_ca(tmp_path)
    cert = cfg.proxy.ca_dir / PROXY_CA_FILE
    real_read = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == cert:  # what chmod 0 does for anyone but root
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(QonicProxyError,
                       match=r"cannot read the proxy CA .* \(Permission denied\); check its perm"):
        ca_bundle(cfg)
