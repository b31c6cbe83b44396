"""Assembles mitmproxy around our addon: options, the addon list, listener modes, interception.

We build a bare `Master` with only the four addons a proxy needs (core, proxyserver, next_layer,
tlsconfig) instead of DumpMaster: no console, no flow storage, no ErrorCheck that calls
sys.exit() behind our back, so a busy port becomes our own one-sentence error.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from cryptography import x509
from mitmproxy import certs, master, options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.proxy import context
from mitmproxy.tls import TlsData

from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.files import UnsafeFile, ensure_private_dir
from qonic_proxy.hosts import Origin
from qonic_proxy.interception_ca import api_host, ensure_ca
from qonic_proxy.proxy import mitm_patches
from qonic_proxy.proxy.upstream_proxy import UpstreamProxyAddon
from qonic_proxy.proxy.upstream_trust import UpstreamTrust

STREAM_THRESHOLD = "1m"  # bodies above this stream through instead of being buffered


def mitm_modes(cfg: Config) -> list[str]:
    modes = [f"reverse:{cfg.qonic.api_url}@{cfg.proxy.port}"]
    if cfg.proxy.forward_port:
        modes.append(f"regular@{cfg.proxy.forward_port}")
    return modes


def intercept_pattern(origin: Origin) -> str:
    """allow_hosts regex: only the API's exact host:port is TLS-intercepted; the rest tunnels."""
    return f"^{re.escape(origin.host)}:{origin.port}$"


def prepare_ca_dir(cfg: Config) -> Path:
    """`[proxy] ca_dir`, created 0700, holding our name-constrained CA for mitmproxy to use."""
    folder = cfg.proxy.ca_dir
    try:
        ensure_private_dir(folder)
        ensure_ca(folder, cfg.qonic.api_url)
    except UnsafeFile as err:
        raise QonicProxyError(
            f"[proxy] ca_dir {folder} is {err.reason}, so others could swap the interception "
            "CA; choose a folder of your own") from None
    except (OSError, ValueError) as err:
        raise QonicProxyError(
            f"cannot prepare the interception CA in {folder} "
            f"({getattr(err, 'strerror', None) or err}); delete that folder's mitmproxy-ca*.pem "
            "files to make a new CA") from None
    return folder


class ApiHostTls(tlsconfig.TlsConfig):
    """Certificates for the API host alone, as the CA's name constraints require.

    mitmproxy would also list the upstream certificate's names, the client's SNI and addresses
    (e.g. the listener's own IP when a client sends no SNI); any of those outside the CA's
    permitted subtree would make every client refuse the certificate.
    """

    def __init__(self, host: str, trust: UpstreamTrust | None = None) -> None:
        super().__init__()
        self._trust = trust
        try:
            self._name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            self._name = x509.DNSName(host)

    def get_cert(self, conn_context: context.Context) -> certs.CertStoreEntry:
        # No common name for an IP: OpenSSL checks a dotted CN against the DNS constraints.
        common_name = str(self._name.value) if isinstance(self._name, x509.DNSName) else None
        return self.certstore.get_cert(common_name, [self._name], "qonic-proxy")

    def tls_start_server(self, tls_start: TlsData) -> None:
        """Before each TLS handshake with the API: a changed ca_file counts from now on."""
        if self._trust is not None:
            self._trust.check()
        super().tls_start_server(tls_start)


def mitm_options(cfg: Config, ca_dir: Path, trust_bundle: Path) -> options.Options:
    """The options mitmproxy accepts before its addons are loaded."""
    return options.Options(
        mode=mitm_modes(cfg),
        listen_host=cfg.proxy.listen_host,
        confdir=str(ca_dir),
        allow_hosts=[intercept_pattern(Origin.parse(cfg.qonic.api_url))],
        ssl_insecure=False,
        ssl_verify_upstream_trusted_ca=str(trust_bundle),
        http2=False,
    )


def upstream_trust(cfg: Config) -> UpstreamTrust:
    """The interception CA folder prepared, and the API trust written into it."""
    return UpstreamTrust(cfg.qonic.ca_file, prepare_ca_dir(cfg))


def build_master(cfg: Config, addon: Any, trust: UpstreamTrust) -> master.Master:
    """A ready-to-run Master with our patches and `addon`; call inside the event loop."""
    mitm_patches.install()
    opts = mitm_options(cfg, trust.folder, trust.bundle)
    mitm = master.Master(opts, with_termlog=False)
    mitm_patches.drop_legacy_log_bridge()
    # One addon of ours, not three: mitmproxy visits every addon for every event (~9 µs
    # each), so readiness and the in-flight count live in QonicAddon too. The upstream proxy's
    # addon is there only when one is configured.
    extra = [] if cfg.qonic.upstream_proxy is None else [
        UpstreamProxyAddon(cfg.qonic.upstream_proxy)]
    mitm.addons.add(core.Core(), proxyserver.Proxyserver(),  # type: ignore[no-untyped-call]
                    next_layer.NextLayer(), *extra,
                    ApiHostTls(api_host(cfg.qonic.api_url), trust), addon)

    def point_mitmproxy_at(changed: UpstreamTrust) -> None:
        mitm.options.update(ssl_verify_upstream_trusted_ca=str(changed.bundle))  # type: ignore[no-untyped-call]

    trust.subscribe(point_mitmproxy_at)
    mitm.options.update(  # type: ignore[no-untyped-call]
        stream_large_bodies=STREAM_THRESHOLD,
        connection_strategy="lazy",
        keep_host_header=True,  # the Host guard must see what the client sent
    )
    return mitm
