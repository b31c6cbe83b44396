"""Our interception CA: constrained to the API host, used by mitmproxy, made anew on a new host.

The refusal tests sign certificates with the CA itself (as a leaked key or a misused proxy
would) and let curl, Python, Go, Java and Node, trusting only this CA, connect to a local TLS
server that presents them: a certificate for the API host is accepted, one for any other DNS
name or for an IP address is refused.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qonic_proxy.interception_ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    InterceptionCa,
    ensure_ca,
    make_ca,
    name_constraints,
)
from qonic_proxy.wrap.runtimes import write_java_truststore

PROBES = Path(__file__).parent / "wrap" / "probes"
API = "api.qonic.com"
TIMEOUT = 60


def sign_leaf(ca: InterceptionCa, name: str) -> tuple[bytes, bytes]:
    """A certificate for `name` (DNS or IP) signed with the CA's key, + chain: (PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        san = x509.DNSName(name)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "probe")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM)
            + ca.cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@contextlib.contextmanager
def tls_server(tmp: Path, cert: bytes, key: bytes) -> Iterator[int]:
    """A TLS server on 127.0.0.1 that completes handshakes with `cert`; yields its port."""
    (tmp / "leaf.pem").write_bytes(cert)
    (tmp / "leaf-key.pem").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "leaf.pem", tmp / "leaf-key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.settimeout(5)
            with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.fixture(scope="module")
def probe_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, int]]]:
    """The CA for api.qonic.com in a folder, and a server per name: {name: port}."""
    tmp = tmp_path_factory.mktemp("ca-probe")
    ca = make_ca(API)
    (tmp / "ca.pem").write_bytes(ca.root.public_bytes(serialization.Encoding.PEM))
    names = (API, "evil.example", "127.0.0.1", "qonic.com")
    with contextlib.ExitStack() as stack:
        ports = {}
        for index, name in enumerate(names):
            folder = tmp / f"leaf{index}"
            folder.mkdir()
            ports[name] = stack.enter_context(tls_server(folder, *sign_leaf(ca, name)))
        yield tmp, ports


EXPECTED = {API: "ok", "evil.example": "refused", "127.0.0.1": "refused", "qonic.com": "refused"}


def _outcomes(output: str) -> dict[str, str]:
    return {name: verdict for verdict, name in (line.split() for line in output.splitlines())}


def _args(ports: dict[str, int]) -> list[str]:
    return [part for name, port in ports.items() for part in (name, str(port))]


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **env},
                            cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_python_refuses_other_names(probe_world: tuple[Path, dict[str, int]]) -> None:
    tmp, ports = probe_world
    ctx = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    seen = {}
    for name, port in ports.items():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=name):
                seen[name] = "ok"
        except ssl.SSLError:
            seen[name] = "refused"
    assert seen == EXPECTED


def test_curl_refuses_other_names(probe_world: tuple[Path, dict[str, int]]) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    tmp, ports = probe_world
    seen = {}
    for name, port in ports.items():
        host = f"[{name}]" if ":" in name else name
        resolve = [] if name[0].isdigit() else ["--resolve", f"{name}:{port}:127.0.0.1"]
        result = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "10",
                                 "--cacert", str(tmp / "ca.pem"), *resolve,
                                 f"https://{host}:{port}/"],
                                capture_output=True, timeout=TIMEOUT, check=False)
        # 60: peer certificate cannot be authenticated; 52/56: handshake done, then empty reply
        seen[name] = "refused" if result.returncode in (35, 60) else "ok"
    assert seen == EXPECTED


def test_go_refuses_other_names(probe_world: tuple[Path, dict[str, int]]) -> None:
    if shutil.which("go") is None:
        pytest.skip("Go is not installed (apt-get install golang-go)")
    tmp, ports = probe_world
    shutil.copy(PROBES / "probe.go", tmp / "probe.go")
    out = _run(["go", "run", "probe.go", *_args(ports)],
               {"SSL_CERT_FILE": str(tmp / "ca.pem"), "GOCACHE": str(tmp / "gocache"),
                "GOFLAGS": "-mod=mod", "GO111MODULE": "off"}, tmp)
    assert _outcomes(out) == EXPECTED


def test_node_refuses_other_names(probe_world: tuple[Path, dict[str, int]]) -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (apt-get install nodejs)")
    tmp, ports = probe_world
    out = _run(["node", str(PROBES / "probe.js"), *_args(ports)],
               {"NODE_EXTRA_CA_CERTS": str(tmp / "ca.pem")}, tmp)
    assert _outcomes(out) == EXPECTED


def test_java_refuses_other_names(probe_world: tuple[Path, dict[str, int]]) -> None:
    if shutil.which("java") is None:
        pytest.skip("Java is not installed (apt-get install default-jdk-headless)")
    tmp, ports = probe_world
    store = write_java_truststore(tmp, str(tmp / "ca.pem"))  # the store `exec` hands out
    out = _run(["java", f"-Djavax.net.ssl.trustStore={store}",
                "-Djavax.net.ssl.trustStoreType=PKCS12", str(PROBES / "Probe.java"),
                *_args(ports)], {}, tmp)
    assert _outcomes(out) == EXPECTED


# ----- the CA's files --------------------------------------------------------------------------
def test_constraints_permit_the_host_and_exclude_every_ip() -> None:
    dns = name_constraints(API)
    assert dns.permitted_subtrees == [x509.DNSName(API)]
    assert set(dns.excluded_subtrees or ()) == {
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0"))}
    ip = name_constraints("127.0.0.2")
    assert x509.IPAddress(ipaddress.ip_network("127.0.0.2/32")) in (ip.permitted_subtrees or ())
    assert all(not isinstance(n, x509.DNSName) or n.value == "invalid"
               for n in ip.permitted_subtrees or ())
    ca = make_ca(API)
    for cert in (ca.root, ca.cert):
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
        assert ext.critical and ext.value == dns


def test_ca_is_reused_then_made_anew_for_another_api_host(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca_dir = tmp_path / "ca"
    cert = ensure_ca(ca_dir, "https://api.qonic.com")
    first = cert.read_bytes()
    assert (ca_dir / CA_KEY_FILE).stat().st_mode & 0o077 == 0
    assert first.strip() in (ca_dir / CA_KEY_FILE).read_bytes()
    with caplog.at_level(logging.WARNING, "qonic_proxy.ca"):
        assert ensure_ca(ca_dir, "https://api.qonic.com/").read_bytes() == first
        assert not caplog.records
        (ca_dir / "mitmproxy-ca-cert.p12").write_bytes(b"old")  # mitmproxy's variant
        second = ensure_ca(ca_dir, "https://127.0.0.2:8443").read_bytes()
        assert ensure_ca(ca_dir, "https://127.0.0.2:8443").read_bytes() == second
    assert second != first
    assert not (ca_dir / "mitmproxy-ca-cert.p12").exists()
    assert [r.getMessage() for r in caplog.records if "stale" in r.getMessage()] != []
    assert len(caplog.records) == 1  # said once


def test_mitmproxy_uses_our_ca_instead_of_making_one(tmp_path: Path) -> None:
    from mitmproxy import certs

    cert = ensure_ca(tmp_path, "https://api.qonic.com")
    store = certs.CertStore.from_store(tmp_path, "mitmproxy", 2048)
    root = x509.load_pem_x509_certificate(cert.read_bytes())
    signer = x509.load_pem_x509_certificate(store.default_ca.to_pem())
    assert signer.issuer == root.subject and signer != root
    assert (tmp_path / CA_CERT_FILE).read_bytes() == cert.read_bytes()
    entry = store.get_cert(API, [x509.DNSName(API)], "qonic-proxy")
    assert x509.load_pem_x509_certificate(entry.cert.to_pem()).issuer == signer.subject
    chain = [x509.load_pem_x509_certificate(c.to_pem()) for c in entry.chain_certs]
    assert chain[-1] == root  # sent along
