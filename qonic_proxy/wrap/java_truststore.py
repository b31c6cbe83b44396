"""A password-less PKCS12 trust store that Java reads, written as plain DER.

Java counts a certificate in a PKCS12 file as trusted only when its bag carries Oracle's
"trusted key usage" attribute; `cryptography` writes that from version 45 on, while mitmproxy 11
pins an older one. The structure is small (RFC 7292: PFX > AuthenticatedSafe > SafeContents >
CertBag, no encryption, no MAC, which Java ≥ 11.0.12 accepts without a password), so it is
encoded here directly; being deterministic, an unchanged bundle gives a byte-identical store.
"""

from __future__ import annotations

from collections.abc import Iterable

DATA = "1.2.840.113549.1.7.1"
CERT_BAG = "1.2.840.113549.1.12.10.1.3"
X509_CERTIFICATE = "1.2.840.113549.1.9.22.1"
FRIENDLY_NAME = "1.2.840.113549.1.9.20"
ORACLE_TRUSTED_KEY_USAGE = "2.16.840.1.113894.746875.1.1"
ANY_EXTENDED_KEY_USAGE = "2.5.29.37.0"


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _set(*items: bytes) -> bytes:
    return _tlv(0x31, b"".join(sorted(items)))  # DER: SET OF in sorted order


def _explicit0(content: bytes) -> bytes:
    return _tlv(0xA0, content)


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray([40 * first + second])
    for value in rest:
        chunk = [value & 0x7F]
        while value > 0x7F:
            value >>= 7
            chunk.append(0x80 | (value & 0x7F))
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _data(content: bytes) -> bytes:
    return _seq(_oid(DATA), _explicit0(_tlv(0x04, content)))


def _cert_bag(der: bytes, alias: str) -> bytes:
    attributes = _set(
        _seq(_oid(FRIENDLY_NAME), _set(_tlv(0x1E, alias.encode("utf-16-be")))),
        _seq(_oid(ORACLE_TRUSTED_KEY_USAGE), _set(_oid(ANY_EXTENDED_KEY_USAGE))),
    )
    cert_bag = _seq(_oid(X509_CERTIFICATE), _explicit0(_tlv(0x04, der)))
    return _seq(_oid(CERT_BAG), _explicit0(cert_bag), attributes)


def java_truststore(certificates_der: Iterable[bytes]) -> bytes:
    """PKCS12 bytes holding each DER certificate as a trusted entry (aliases ca-0, ca-1, ...)."""
    bags = [_cert_bag(der, f"ca-{index}") for index, der in enumerate(certificates_der)]
    safe_contents = _seq(*bags)
    return _seq(_tlv(0x02, b"\x03"), _data(_seq(_data(safe_contents))))
