"""The throwaway CA: file modes, certificate contents, and trust in that CA only."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from qonic_proxy.sandbox.certs import CA_KEY_FILE, make_server_tls, server_ssl_context


def test_local_ca_files_and_certificate(tmp_path: Path) -> None:
    tls = make_server_tls(tmp_path / "ca")
    assert stat.S_IMODE(os.stat(tmp_path / "ca").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tls.key_file).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "127.0.0.2",
        "::1",
    }
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.issuer == ca.subject
    assert "PRIVATE" not in tls.ca_file.read_text() and "PRIVATE" not in tls.cert_file.read_text()


def _tls_roundtrip(ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, hostname: str) -> str:
    listener = socket.create_server(("127.0.0.1", 0))
    result: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(b"ok")
            except (ssl.SSLError, OSError):
                result.append("server-failed")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=hostname) as conn,
        ):
            return conn.recv(2).decode()
    finally:
        t.join(10)
        listener.close()


def test_local_ca_verifies_only_with_its_own_ca(tmp_path: Path) -> None:
    tls = make_server_tls(tmp_path / "a")
    other = make_server_tls(tmp_path / "b")
    trusting = ssl.create_default_context(cafile=str(tls.ca_file))
    for name in ("localhost", "127.0.0.1"):
        assert _tls_roundtrip(trusting, server_ssl_context(tls), name) == "ok"
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_roundtrip(trusting, server_ssl_context(other), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):  # a name the certificate does not carry
        _tls_roundtrip(trusting, server_ssl_context(tls), "api.qonic.com")


def test_a_kept_ca_is_reused_and_signs_the_new_certificate(tmp_path: Path) -> None:
    first = make_server_tls(tmp_path, keep_ca=True)
    ca_pem = first.ca_file.read_bytes()
    assert stat.S_IMODE((tmp_path / CA_KEY_FILE).stat().st_mode) == 0o600
    second = make_server_tls(tmp_path, keep_ca=True)
    assert second.ca_file.read_bytes() == ca_pem
    ca = x509.load_pem_x509_certificate(ca_pem)
    server = x509.load_pem_x509_certificate(second.cert_file.read_bytes())
    server.verify_directly_issued_by(ca)


def test_without_keep_ca_every_start_is_a_new_ca_and_no_key_is_kept(tmp_path: Path) -> None:
    first = make_server_tls(tmp_path).ca_file.read_bytes()
    assert make_server_tls(tmp_path).ca_file.read_bytes() != first
    assert not (tmp_path / CA_KEY_FILE).exists()


@pytest.mark.parametrize("damage", ["garbage", "loose", "other-key"])
def test_a_damaged_or_loose_kept_ca_is_replaced(tmp_path: Path, damage: str) -> None:
    first = make_server_tls(tmp_path, keep_ca=True).ca_file.read_bytes()
    key = tmp_path / CA_KEY_FILE
    if damage == "garbage":
        key.write_bytes(b"not a key")
    elif damage == "loose":
        key.chmod(0o644)
    else:
        make_server_tls(tmp_path / "other", keep_ca=True)
        key.write_bytes((tmp_path / "other" / CA_KEY_FILE).read_bytes())
    second = make_server_tls(tmp_path, keep_ca=True)
    assert second.ca_file.read_bytes() != first
    server = x509.load_pem_x509_certificate(second.cert_file.read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(second.ca_file.read_bytes()))
