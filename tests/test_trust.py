"""Tests for qonic_proxy.trust: one set of roots for every outbound TLS connection."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
from cryptography import x509

from qonic_proxy import trust
from qonic_proxy.errors import ConfigError
from qonic_proxy.sandbox.certs import ServerTls, make_server_tls, server_ssl_context


@pytest.fixture
def tls(tmp_path: Path) -> ServerTls:
    return make_server_tls(tmp_path / "tls")


@pytest.fixture
def no_system_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSSL's default places pointed at empty ones, so only what a test adds is trusted."""
    empty_dir = tmp_path / "empty-certs"
    empty_dir.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(empty_dir))


@pytest.fixture
def tls_server(tls: ServerTls) -> Iterator[int]:
    """A loopback TLS server with the throwaway CA's certificate; yields its port."""
    context = server_ssl_context(tls)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as wrapped:
                    wrapped.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def handshake(context: ssl.SSLContext, port: int) -> None:
    with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
          context.wrap_socket(raw, server_hostname="localhost") as wrapped):
        wrapped.sendall(b"x")


def test_roots_follow_ssl_cert_file_and_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            tls: ServerTls) -> None:
    folder = tmp_path / "certs"
    folder.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    monkeypatch.setenv("SSL_CERT_DIR", str(folder))
    roots = trust.trust_roots(None)
    assert roots.system_file == tls.ca_file
    assert roots.system_dir == folder
    assert roots.public_file == Path(certifi.where())
    assert roots.extra_file is None


def test_a_ca_in_ssl_cert_file_is_trusted_by_the_context(
        monkeypatch: pytest.MonkeyPatch, tls: ServerTls, tls_server: int,
        no_system_store: None) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(trust.ssl_context(trust.trust_roots(None)), tls_server)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))  # a corporate CA installed system-wide
    handshake(trust.ssl_context(trust.trust_roots(None)), tls_server)


def test_a_ca_in_ssl_cert_dir_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         tls: ServerTls, tls_server: int,
                                         no_system_store: None) -> None:
    folder = tmp_path / "hashed"
    folder.mkdir()
    cert = ssl.PEM_cert_to_DER_cert(tls.ca_file.read_text())
    # OpenSSL looks a CA up by its subject hash: name the file the way c_rehash would

    subject_hash = _openssl_subject_hash(x509.load_der_x509_certificate(cert))
    (folder / f"{subject_hash}.0").write_bytes(tls.ca_file.read_bytes())
    monkeypatch.setenv("SSL_CERT_DIR", str(folder))
    roots = trust.trust_roots(None)
    handshake(trust.ssl_context(roots), tls_server)
    assert tls.ca_file.read_bytes().strip() in trust.pem_bundle(roots)


def _openssl_subject_hash(cert: object) -> str:
    """The name `openssl x509 -hash` prints, computed with the openssl command."""
    import subprocess

    from cryptography.hazmat.primitives import serialization
    from cryptography.x509 import Certificate

    assert isinstance(cert, Certificate)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject_hash"], input=pem,
                         capture_output=True, check=True)
    return out.stdout.decode().strip()


def test_ca_file_adds_to_the_public_roots(tls: ServerTls, tls_server: int,
                                          no_system_store: None) -> None:
    roots = trust.trust_roots(tls.ca_file)
    handshake(trust.ssl_context(roots), tls_server)
    bundle = trust.pem_bundle(roots)
    assert tls.ca_file.read_bytes().strip() in bundle
    public = Path(certifi.where()).read_bytes()
    assert bundle.count(b"-----BEGIN CERTIFICATE-----") == (
        public.count(b"-----BEGIN CERTIFICATE-----") + 1)


def test_the_context_verifies_host_names_and_refuses_old_tls() -> None:
    context = trust.ssl_context(trust.trust_roots(None))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_duplicates_are_dropped(monkeypatch: pytest.MonkeyPatch, tls: ServerTls) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # the same certs twice
    bundle = trust.pem_bundle(trust.trust_roots(tls.ca_file))
    public = Path(certifi.where()).read_bytes()
    begin = b"-----BEGIN CERTIFICATE-----"
    assert bundle.count(begin) >= public.count(begin)
    blocks = bundle.split(b"-----END CERTIFICATE-----")
    assert len(blocks) - 1 == len({b"".join(b.split()) for b in blocks if b.strip()})


def test_an_unreadable_or_empty_ca_file_is_one_config_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=r"cannot load \[qonic\] ca_file .*missing\.pem"):
        trust.ssl_context(trust.trust_roots(missing))
    with pytest.raises(ConfigError, match=r"cannot load \[qonic\] ca_file"):
        trust.pem_bundle(trust.trust_roots(missing))
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        trust.pem_bundle(trust.trust_roots(empty))


def test_write_bundle_is_atomic_and_skips_unchanged(tmp_path: Path, tls: ServerTls) -> None:
    target = tmp_path / "upstream-trust.pem"
    roots = trust.trust_roots(tls.ca_file)
    trust.write_bundle(roots, target)
    first = target.stat()
    assert target.read_bytes() == trust.pem_bundle(roots)
    assert first.st_mode & 0o777 == 0o600
    trust.write_bundle(roots, target)
    assert target.stat().st_ino == first.st_ino  # unchanged: not rewritten
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("variables", [("SSL_CERT_FILE", "SSL_CERT_DIR"), ("SSL_CERT_FILE",),
                                       ("SSL_CERT_DIR",), ()])
def test_the_system_paths_are_the_ones_ssl_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 variables: tuple[str, ...]) -> None:
    """With both variables set `_ssl` is not asked; either way the answer is ssl's own."""
    from qonic_proxy.trust import _default_verify_paths

    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in variables:
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    paths = ssl.get_default_verify_paths()  # the variables' names and OpenSSL's defaults
    assert _default_verify_paths() == (
        os.environ.get(paths.openssl_cafile_env, paths.openssl_cafile),
        os.environ.get(paths.openssl_capath_env, paths.openssl_capath))
