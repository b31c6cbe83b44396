"""The interception CA: made by us, valid for the configured API host only.

Whoever trusts the proxy's CA (a wrapped program, a shell after `env`, a system-wide install)
would otherwise trust it for every site. So the CA carries a critical X.509 Name Constraints
extension that permits the API host alone: its DNS name (and names below it), or its IP address
when `api_url` names one. RFC 5280 constrains each name type on its own, so a DNS-only
constraint would leave IP addresses free: all IPv4 and IPv6 addresses are excluded for a DNS
host, and every DNS name outside the reserved `.invalid` is excluded for an IP host.

mitmproxy finds the CA in its confdir under its own file names (`mitmproxy-ca.pem` = key +
certificate + chain, `mitmproxy-ca-cert.pem` = the root clients trust; see `make_ca`) and uses
it instead of making one; it adds `mitmproxy-dhparam.pem` itself. When `api_url` changes (or
an old unconstrained CA is found), the CA is made anew, once, with a warning: a copy installed
elsewhere is stale then.
Creating it needs `cryptography` only, so `exec`/`env` never import mitmproxy for it.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported where a CA is made or first checked
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from qonic_proxy.digest import sha256
from qonic_proxy.files import PUBLIC_FILE_MODE, ensure_private_dir, exclusive_lock, write_atomic
from qonic_proxy.hosts import Origin
from qonic_proxy.logs import logger
from qonic_proxy.records import record

log = logger("qonic_proxy.ca")

CA_CERT_FILE = "mitmproxy-ca-cert.pem"  # mitmproxy's name for the public CA certificate
CA_KEY_FILE = "mitmproxy-ca.pem"  # key + certificate; mitmproxy makes its own CA without it
STALE_VARIANTS = ("mitmproxy-ca.p12", "mitmproxy-ca-cert.p12", "mitmproxy-ca-cert.cer")
LOCK_FILE = ".ca.lock"
KEY_SIZE = 2048  # mitmproxy's default
VALIDITY = datetime.timedelta(days=3 * 365)
BACKDATE = datetime.timedelta(days=2)  # clock skew between us and a client
EVERY_IPV4 = ipaddress.ip_network("0.0.0.0/0")
EVERY_IPV6 = ipaddress.ip_network("::/0")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")
VERIFIED_FILE = ".ca-verified"  # the digest of a CA checked for a host: no x509 parse per run
NO_DNS_NAME = "invalid"  # RFC 6761: never resolves, so permitting it alone permits no real name


def api_host(api_url: str) -> str:
    return Origin.parse(api_url).host.strip("[]").lower()


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def name_constraints(host: str) -> x509.NameConstraints:
    """Permit `host` (a DNS name or an IP address) and nothing else of either name type."""
    from cryptography import x509

    ip = _ip(host)
    if ip is None:
        return x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(host)],
            excluded_subtrees=[x509.IPAddress(EVERY_IPV4), x509.IPAddress(EVERY_IPV6)])
    return x509.NameConstraints(
        permitted_subtrees=[x509.IPAddress(ipaddress.ip_network(ip)), x509.DNSName(NO_DNS_NAME)],
        excluded_subtrees=None)


@record
class InterceptionCa:
    """The key mitmproxy signs with, its certificate, and the root clients trust."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate  # the intermediate: issues every certificate the proxy presents
    root: x509.Certificate  # its key is discarded once the intermediate is signed


def _ca_certificate(subject: x509.Name, issuer: x509.Name, public_key: CertificatePublicKeyTypes,
                    signer: ec.EllipticCurvePrivateKey, host: str,
                    path_length: int) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(name_constraints(host), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                       critical=False)
        .sign(signer, hashes.SHA256())
    )


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qonic-proxy")])


def make_ca(host: str) -> InterceptionCa:
    """A root and an intermediate, both constrained to `host`; the root's key is thrown away.

    Java's validator ignores a trust anchor's own constraints and applies an intermediate's, so
    the constraints in the chain bind every client; with the root's key gone, nothing can be
    issued outside that intermediate.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"qonic-proxy root CA for {host}")
    root = _ca_certificate(root_name, root_name, root_key.public_key(), root_key, host, 1)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    cert = _ca_certificate(_name(f"qonic-proxy CA for {host}"), root_name, key.public_key(),
                           root_key, host, 0)
    return InterceptionCa(key, cert, root)


def _constrained_to(cert_pem: bytes, host: str) -> bool:
    """True when the PEM certificate is a CA with exactly `host`'s critical name constraints."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    except (ValueError, x509.ExtensionNotFound):
        return False
    return ext.critical and ext.value == name_constraints(host)


class MissingCertificate(ValueError):
    """The key file holds no certificate (someone edited it): only the user can decide."""


def _current(ca_dir: Path, host: str) -> bool | None:
    """True: a CA for `host` is in place; False: a CA for something else; None: no CA.

    A lost public half of a CA for `host` is restored from the key file. Errors other than
    "no such file" (an unreadable file) are the caller's to word.
    """
    try:
        combined = (ca_dir / CA_KEY_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        public = (ca_dir / CA_CERT_FILE).read_bytes()
    except FileNotFoundError:
        found = _PEM_CERT.findall(combined)
        if not found:
            raise MissingCertificate(str(ca_dir / CA_KEY_FILE)) from None
        if not _constrained_to(found[-1], host):  # the last one is the root
            return False
        write_atomic(ca_dir / CA_CERT_FILE, found[-1] + b"\n", mode=PUBLIC_FILE_MODE)
        return True
    return _verified(ca_dir, host, public, combined)


def _verified(ca_dir: Path, host: str, public: bytes, combined: bytes) -> bool:
    """The check of `_current`, parsed once per CA and host: later runs compare a digest of the
    host and both files with the one kept in `ca_dir` (ours alone), so `exec` and `env` need no
    `cryptography` until the CA or the API host changes."""
    digest = sha256(b"\0".join((host.encode(), public, combined))).hexdigest().encode()
    with contextlib.suppress(OSError):
        if (ca_dir / VERIFIED_FILE).read_bytes() == digest:
            return True
    if not (public.strip() in combined and _constrained_to(public, host)):
        return False
    with contextlib.suppress(OSError):
        write_atomic(ca_dir / VERIFIED_FILE, digest)
    return True


def _write(ca_dir: Path, host: str) -> None:
    from cryptography.hazmat.primitives import serialization

    ca = make_ca(host)
    pem = serialization.Encoding.PEM
    cert_pem, root_pem = ca.cert.public_bytes(pem), ca.root.public_bytes(pem)
    key_pem = ca.key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    for variant in STALE_VARIANTS:  # mitmproxy's copies of a former CA
        with contextlib.suppress(FileNotFoundError):
            (ca_dir / variant).unlink()
    # mitmproxy: key, then its certificate, then the chain it sends along (0600: the key)
    write_atomic(ca_dir / CA_KEY_FILE, key_pem + cert_pem + root_pem)
    write_atomic(ca_dir / CA_CERT_FILE, root_pem, mode=PUBLIC_FILE_MODE)


def ensure_ca(ca_dir: Path, api_url: str) -> Path:
    """The CA certificate in `ca_dir` for `api_url`'s host, made (or made anew) when needed.

    Raises OSError or MissingCertificate (callers word those), or files.NotPrivate (exit 78).
    """
    host = api_host(api_url)
    cert = ca_dir / CA_CERT_FILE
    if _current(ca_dir, host):
        return cert
    ensure_private_dir(ca_dir)
    with exclusive_lock(ca_dir / LOCK_FILE):  # two first-time `exec`s must not make two CAs
        state = _current(ca_dir, host)
        if state:
            return cert
        _write(ca_dir, host)
    if state is False:
        log.warning("made a new proxy CA for %s in %s (the old one was for another API host or "
                    "unconstrained); a copy installed system-wide is stale now: install %s again",
                    host, ca_dir, cert)
    return cert
