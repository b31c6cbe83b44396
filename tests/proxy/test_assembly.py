"""ApiHostTls: the certificate the proxy presents for the API is made once, not per connection."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from mitmproxy import certs

from qonic_proxy.interception_ca import ensure_ca
from qonic_proxy.proxy.assembly import ApiHostTls


@pytest.mark.parametrize(("api_url", "name"), [
    ("https://api.qonic.test", x509.DNSName("api.qonic.test")),
    ("https://127.0.0.2:8443", x509.IPAddress(ipaddress.ip_address("127.0.0.2"))),
])
def test_one_leaf_per_host_whatever_the_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    api_url: str, name: x509.GeneralName) -> None:
    """Signing a leaf per connection would cost every new forward connection; the entry is
    cached by names, and the names never come from the connection (SNI, addresses)."""
    ensure_ca(tmp_path, api_url)
    tls = ApiHostTls(str(name.value))
    tls.certstore = certs.CertStore.from_store(tmp_path, "mitmproxy", 2048)
    made: list[Any] = []
    original = certs.dummy_cert
    monkeypatch.setattr(certs, "dummy_cert", lambda *a, **k: made.append(a) or original(*a, **k))
    contexts: list[Any] = [object(), object(), object()]  # three connections, any SNI / address
    entries = [tls.get_cert(c) for c in contexts]
    assert len(made) == 1
    assert all(entry is entries[0] for entry in entries)
    assert list(entries[0].cert.altnames) == [name]
