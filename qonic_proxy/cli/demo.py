"""`qonic-proxy demo`: the whole product against the local sandbox, with no account and no browser.

It starts the sandbox (auto-consent), the real daemon, completes the real login by following the
authorize redirect itself, makes sample requests, prints the curl commands to try, and serves
until Ctrl-C. Everything lives in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import socket
import ssl
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from qonic_proxy.config.model import (
    Config,
    OAuthSettings,
    ProxySettings,
    QonicSettings,
    TokenSettings,
)
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.ports import free_port
from qonic_proxy.proxy.daemon import Daemon
from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.settings import SandboxSettings

DEMO_SCOPES = ("projects:read", "models:read", "models:write")


def port_if_free(preferred: int, host: str = "127.0.0.1") -> bool:
    """Whether `preferred` (not 0) can be bound right now (the demo falls back to free ports)."""
    if not preferred:
        return False
    with socket.socket() as probe:
        # as mitmproxy (asyncio) binds: SO_REUSEADDR, so TIME_WAIT left by a demo run a moment
        # ago does not count as busy; a real listener still does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, preferred))
        except OSError:
            return False
    return True


def scripted_browser(ca_file: Path | None) -> Callable[[str], bool]:
    """A 'browser' that follows the authorize URL's redirects into our callback server."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))

    def open_url(url: str) -> bool:
        with opener.open(url, timeout=30) as response:
            response.read()
        return True

    return open_url


def demo_config(workdir: Path, sandbox: Sandbox, client_secret: str, redirect_uri: str,
                port: int, forward_port: int) -> Config:
    return Config(
        path=None,
        qonic=QonicSettings(
            api_url=sandbox.url,
            authorize_url=sandbox.url + "/v1/auth/authorize",
            token_url=sandbox.url + "/v1/auth/token",
            ca_file=sandbox.ca_file,
        ),
        oauth=OAuthSettings(
            client_id="qonic-proxy-demo", client_secret=client_secret, secret_source="demo",  # noqa: S106 - a source name
            scopes=DEMO_SCOPES, redirect_uri=redirect_uri, open_browser=True, login_timeout=60,
        ),
        proxy=ProxySettings(
            listen_host="127.0.0.1", port=port, forward_port=forward_port,
            allowed_hosts=("localhost", "127.0.0.1", "::1"), client_key_file=None,
            ca_dir=workdir / "ca",
        ),
        token=TokenSettings(cache_file=workdir / "state" / "token.json", refresh_margin=60),
    )


def run_demo(*, port: int = 8080, forward_port: int = 8081, once: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="qonic-proxy-demo-"))
    callback_port = free_port()
    redirect_uri = f"http://127.0.0.1:{callback_port}/callback"
    client_secret = secrets.token_urlsafe(24)
    sandbox = Sandbox(SandboxSettings(
        client_id="qonic-proxy-demo", client_secret=client_secret, redirect_uris=(redirect_uri,),
        auto_consent=True, cert_dir=workdir / "sandbox-tls",
        export_redirect_url="https://127.0.0.1:9/elsewhere",
    ))
    try:
        sandbox.start()
        # a busy (or 0) reverse port becomes 0, ephemeral; the forward port must be a number,
        # since forward_port 0 would mean "off" (and `curl --proxy None`)
        cfg = demo_config(workdir, sandbox, client_secret, redirect_uri,
                          port if port_if_free(port) else 0,
                          forward_port if port_if_free(forward_port) else free_port())
        return asyncio.run(_demo(cfg, sandbox, once, requested=(port, forward_port)))
    finally:
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _demo(cfg: Config, sandbox: Sandbox, once: bool, requested: tuple[int, int]) -> int:
    daemon = Daemon(cfg, open_browser=scripted_browser(sandbox.ca_file),
                    announce_ready=lambda line: None, scripted_browser=True)
    daemon.install_signal_handlers()
    try:
        print(f"1. Sandbox (a local stand-in for api.qonic.com) is running at {sandbox.url}")
        await daemon.start()
        listeners = daemon.listeners
        fwd = listeners.forward_url
        got = (listeners.reverse_port, listeners.forward_port)
        busy = [str(want) for want, port in zip(requested, got, strict=True)
                if want and want != port]
        if busy:
            print(f"   (port {' and '.join(busy)} was busy: using free ports)")
        print(f"2. qonic-proxy is listening: reverse {listeners.reverse_url}, forward {fwd}")
        print("3. Logging in through the sandbox's consent (a scripted browser follows the "
              "authorize redirect into qonic-proxy's loopback callback)...")
        for _ in range(600):
            if daemon.tokens.is_usable():
                break
            if daemon.tokens.last_login_error:
                raise QonicProxyError(f"demo login failed: {daemon.tokens.last_login_error}")
            await asyncio.sleep(0.05)
        else:
            raise QonicProxyError("demo login did not complete within 30 s")
        print("   logged in; the token is cached and never shown.")
        status, body = await asyncio.to_thread(_get, f"{listeners.reverse_url}/v1/projects")
        print(f"4. GET {listeners.reverse_url}/v1/projects (no Authorization header sent) -> "
              f"{status}")
        print("   " + json.dumps(body)[:300])
        ca_cert = cfg.proxy.ca_dir / "mitmproxy-ca-cert.pem"
        print("\nTry it yourself while this runs:")
        print(f"  curl {listeners.reverse_url}/v1/projects")
        print(f"  curl {listeners.reverse_url}/v1/projects/p-1001/models")
        print(f"  curl --proxy {fwd} --cacert {ca_cert} {sandbox.url}/v1/projects")
        print(f"  curl {listeners.reverse_url}/-/health")
        print(f"  curl {listeners.reverse_url}/-/metrics")
        if status != 200:
            raise QonicProxyError(f"the sample request answered {status}, expected 200")
        if once:
            return 0
        print("\nServing until Ctrl-C.", flush=True)
        await daemon.wait()
        return 0
    finally:
        await daemon.stop(grace=2)


def _get(url: str) -> tuple[int, object]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with contextlib.suppress(ValueError):
            return err.code, json.loads(err.read())
        return err.code, None
