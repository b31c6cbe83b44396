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

from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context


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
