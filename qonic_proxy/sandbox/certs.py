"""A throwaway certificate authority and server certificate for local HTTPS (sandbox, tests).

The sandbox must speak real, verified TLS so that the proxy's certificate checks are exercised
exactly as against Qonic; a private CA that clients are told to trust gives that without ever
disabling verification.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qonic_proxy.files import UnsafeFile, read_private_file, write_atomic

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"  # only in a folder the user named, to keep the CA across restarts
KEPT_CA_DAYS = 365


@dataclass(frozen=True)
class ServerTls:
    """Where the PEM files are: `ca_file` is what clients trust; the key file is 0600."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures always; certificate and CRL signing only for the CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _new_ca(not_before: datetime.datetime, days: int) -> tuple[ec.EllipticCurvePrivateKey,
                                                                 x509.Certificate]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qonic-proxy sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, "qonic-proxy sandbox throwaway CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


def _kept_ca(directory: Path, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey,
                                                               x509.Certificate] | None:
    """The CA kept in `directory` by an earlier start, if it is ours, private and still valid."""
    try:
        key_pem = read_private_file(directory / CA_KEY_FILE, limit=64 * 1024)
        if key_pem is None:
            return None
        ca_cert = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
        ca_key = serialization.load_pem_private_key(key_pem, password=None)
    except (OSError, UnsafeFile, ValueError):
        return None  # unreadable, foreign or damaged: make a new one
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_key.public_key() != (
            ca_cert.public_key()):
        return None
    if ca_cert.not_valid_after_utc - now < datetime.timedelta(days=2):
        return None
    return ca_key, ca_cert


def make_server_tls(
    directory: Path,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1", "127.0.0.2", "::1"),
    *,
    keep_ca: bool = False,
) -> ServerTls:
    """A server certificate for `hostnames` and `ips` in `directory`, signed by a CA there.

    By default a new CA every time: its key is never kept, so trusting `ca_file` trusts only
    this server. With `keep_ca` (a `--cert-dir` the user named) the CA key is kept there (0600)
    and reused while valid, so a config that trusts `ca_file` survives restarts.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)

    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=30)
    kept = _kept_ca(directory, now) if keep_ca else None
    ca_key, ca_cert = kept or _new_ca(not_before, days=KEPT_CA_DAYS if keep_ca else 31)
    ca_name = ca_cert.subject
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    not_after = min(not_after, ca_cert.not_valid_after_utc)

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    common_name = hostnames[0] if hostnames else (ips[0] if ips else "localhost")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    tls = ServerTls(
        ca_file=directory / CA_FILE,
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
    )
    pem = serialization.Encoding.PEM
    if kept is None:
        write_atomic(tls.ca_file, ca_cert.public_bytes(pem), mode=0o644)
    if keep_ca and kept is None:
        ca_key_pem = ca_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_atomic(directory / CA_KEY_FILE, ca_key_pem, mode=0o600)
    write_atomic(tls.cert_file, cert.public_bytes(pem), mode=0o644)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(tls.key_file, key_pem, mode=0o600)
    return tls


def server_ssl_context(tls: ServerTls) -> ssl.SSLContext:
    """A server-side context with modern defaults (TLS 1.2+) loaded with the sandbox certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    return ctx
