"""What a wrapped program sees: the proxy, trust and API variables, and a private daemon's config.

A legacy script knows nothing about OAuth; it does know the conventional environment variables
(HTTP(S)_PROXY, SSL_CERT_FILE, ...). So `exec` points those at the forward listener and at a CA
bundle that also trusts the proxy's interception CA, and adds QONIC_API_URL for the reverse
listener. The token itself never leaves the proxy: it is not in the child's environment or argv,
and our own client secret is removed from the environment too.

Runtimes that ignore these variables (wget, PHP's curl, Java) get files of their own through
the variables they do read: see `qonic_proxy.wrap.runtimes`.

NODE_EXTRA_CA_CERTS gets the same full bundle as the others (not just the proxy CA): Node only
needs the proxy CA on top of its built-in roots, but the bundle also carries the system store, so
a corporate CA installed system-wide is trusted by Node exactly as by curl and Python.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from qonic_proxy.config.model import ENV_CONFIG, ENV_SECRET, Config
from qonic_proxy.hosts import LOOPBACK_NAMES, is_loopback_host
from qonic_proxy.records import record, replace

NO_PROXY = "localhost,127.0.0.1,::1"  # the reverse listener must be reached directly
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
KEY_USER = "qonic"  # any user name will do: the client key is the password


@record
class Endpoints:
    """Where the child reaches the proxy: the reverse origin and the forward proxy URL."""

    reverse: str  # e.g. http://127.0.0.1:8080
    forward: str  # e.g. http://127.0.0.1:8081


def _with_key(url: str, client_key: str) -> str:
    return url.replace("://", f"://{KEY_USER}:{quote(client_key, safe='')}@", 1)


def child_environment(base: Mapping[str, str], endpoints: Endpoints, bundle: str,
                      config_file: Path | None = None, client_key: str | None = None,
                      ) -> dict[str, str]:
    """The environment CMD runs with: proxy, trust and API variables; never the Qonic token.

    A minted key (valid only while the child's `exec` or shell lives; not a Qonic secret: it
    only opens this proxy) rides in the URLs' user info, which clients turn into
    (Proxy-)Authorization: Basic.
    """
    env = dict(base)
    env.pop(ENV_SECRET, None)  # the child has no use for our client secret
    forward, reverse = endpoints.forward, endpoints.reverse
    if client_key is not None:
        forward, reverse = _with_key(forward, client_key), _with_key(reverse, client_key)
    for name in PROXY_VARIABLES:
        env[name] = forward
    env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
    # Node >= 22.21 / 24.5 honour the proxy variables only when asked; older Node ignores this.
    env["NODE_USE_ENV_PROXY"] = "1"
    env["QONIC_API_URL"] = reverse + "/v1"
    for name in CA_VARIABLES:
        env[name] = bundle
    if config_file is not None:  # a nested `qonic-proxy token`/`status` finds the same config
        env[ENV_CONFIG] = str(config_file)
    return env


def wrapped_environment(cfg: Config, base: Mapping[str, str], endpoints: Endpoints,
                        bundle: str, key: str | None = None) -> dict[str, str]:
    """`child_environment` plus what wget, PHP and Java need (their files written as needed).

    `key` is a key minted for this child (see `daemon_link.minted_key`), never the configured
    client key: that one would outlive the child in any command line it shows.
    """
    from qonic_proxy.wrap.runtimes import runtime_environment  # hashlib, files: exec/env only

    env = child_environment(base, endpoints, bundle, cfg.path, key)
    env.update(runtime_environment(base, endpoints.forward, bundle))
    return env


def private_config(cfg: Config, *, read_only: bool = False) -> Config:
    """`cfg` for a private daemon: loopback only, ephemeral reverse port, a free forward port.

    It keeps the client key and [access] of `cfg` (a private proxy is still reachable by other
    accounts on loopback); `read_only` adds our own account and root to [access] read_only.
    """
    from qonic_proxy.ports import free_port

    host = cfg.proxy.listen_host
    if not is_loopback_host(host):
        host = "127.0.0.1"  # the private proxy serves one local child; never expose it
    allowed = tuple(dict.fromkeys((*cfg.proxy.allowed_hosts, *LOOPBACK_NAMES)))
    proxy = replace(cfg.proxy, listen_host=host, port=0,
                                forward_port=free_port(host), allowed_hosts=allowed)
    access = cfg.access
    if read_only:
        limited = tuple(dict.fromkeys((*access.read_only, os.geteuid(), 0)))
        access = replace(access, read_only=limited)
    return replace(cfg, proxy=proxy, access=access)
