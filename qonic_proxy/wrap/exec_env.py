"""`qonic-proxy exec` and `qonic-proxy ca`: run unchanged programs against the proxy.

A legacy script knows nothing about OAuth; it does know the conventional environment variables
(HTTP(S)_PROXY, SSL_CERT_FILE, ...). So `exec` points those at the forward listener and at a CA
bundle that also trusts the proxy's interception CA, adds QONIC_API_URL for the reverse listener,
and runs the command as a child. The token itself never leaves the proxy: it is not in the
child's environment or argv, and our own client secret is removed from the environment too.

NODE_EXTRA_CA_CERTS gets the same full bundle as the others (not just the proxy CA): Node only
needs the proxy CA on top of its built-in roots, but the bundle also carries the system store, so
a corporate CA installed system-wide is trusted by Node exactly as by curl and Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import webbrowser
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit

import certifi

from qonic_proxy.config.model import ENV_SECRET, Config
from qonic_proxy.errors import LoginError, QonicProxyError
from qonic_proxy.files import ensure_private_dir
from qonic_proxy.hosts import Origin, connect_host, is_loopback_host
from qonic_proxy.ports import free_port
from qonic_proxy.proxy.client_key import load_or_create_key

log = logging.getLogger("qonic_proxy.exec")

PROXY_CA_FILE = "mitmproxy-ca-cert.pem"  # mitmproxy's name for the public CA certificate
PROXY_CA_KEY_FILE = "mitmproxy-ca.pem"  # key + certificate; mitmproxy regenerates all without it
BUNDLE_FILE = "ca-bundle.pem"
# Debian/Ubuntu/Alpine/Arch, then Fedora/RHEL: where `update-ca-certificates` & co. put the
# system store, including CAs an administrator added (corporate TLS inspection).
SYSTEM_BUNDLES = (Path("/etc/ssl/certs/ca-certificates.crt"),
                  Path("/etc/pki/tls/certs/ca-bundle.crt"))
NO_PROXY = "localhost,127.0.0.1,::1"  # the reverse listener must be reached directly
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LOGIN_POLL = 0.1  # seconds between checks while waiting for a login

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


# ----- the CA certificate and the bundle ------------------------------------------------------
def ca_certificate(cfg: Config) -> str:
    """Path of the proxy's interception CA certificate, created (not the proxy) if missing.

    Creating it here lets `ca` and `exec` hand out a file that the daemon will later use, so a
    user can install it system-wide before the first `run`.
    """
    ca_dir = cfg.proxy.ca_dir
    cert = ca_dir / PROXY_CA_FILE
    if cert.is_file() and (ca_dir / PROXY_CA_KEY_FILE).is_file():
        return str(cert)
    try:
        ensure_private_dir(ca_dir)
        with _locked(ca_dir / ".ca.lock"):  # two first-time `exec`s must not make two CAs
            if not (ca_dir / PROXY_CA_KEY_FILE).is_file():
                from mitmproxy import certs, options

                key_size = getattr(options, "KEY_SIZE", 2048)
                certs.CertStore.from_store(ca_dir, "mitmproxy", key_size)
            elif not cert.is_file():  # someone deleted only the public half: restore it
                _restore_certificate(ca_dir / PROXY_CA_KEY_FILE, cert)
    except OSError as err:
        raise QonicProxyError(
            f"cannot create the proxy's CA certificate in {ca_dir} "
            f"({err.strerror or type(err).__name__}); make that folder writable for this user "
            "or set [proxy] ca_dir in the config"
        ) from None
    return str(cert)


def _restore_certificate(combined: Path, cert: Path) -> None:
    match = _PEM_CERT.search(combined.read_bytes())
    if match is None:
        raise QonicProxyError(f"{combined} holds no certificate; delete it to make a new CA")
    _write_atomically(cert, match.group(0) + b"\n")


def ca_bundle(cfg: Config) -> str:
    """Write `ca_dir/ca-bundle.pem` = public CAs + system CAs + the proxy CA; return its path.

    Clients given this one file verify both intercepted Qonic calls (proxy CA) and tunnelled
    calls to every other host (public and system CAs). Duplicates are dropped.
    """
    proxy_ca = Path(ca_certificate(cfg))
    sources = [Path(certifi.where())]
    sources += [path for path in SYSTEM_BUNDLES if path.is_file()][:1]
    sources.append(proxy_ca)
    seen: set[bytes] = set()
    blocks: list[bytes] = []
    for source in sources:
        try:
            data = source.read_bytes()
        except OSError as err:
            if source == proxy_ca:
                raise QonicProxyError(f"cannot read the proxy CA {source} "
                                      f"({err.strerror}); check its permissions") from None
            log.warning("skipping unreadable CA bundle %s (%s)", source, err.strerror)
            continue
        for match in _PEM_CERT.finditer(data):
            key = b"".join(match.group(0).split())
            if key not in seen:
                seen.add(key)
                blocks.append(match.group(0))
    bundle = cfg.proxy.ca_dir / BUNDLE_FILE
    content = b"\n".join(blocks) + b"\n"
    with contextlib.suppress(OSError):
        if bundle.read_bytes() == content:
            return str(bundle)  # unchanged: do not churn a file other children may be reading
    try:
        _write_atomically(bundle, content)
    except OSError as err:
        raise QonicProxyError(f"cannot write {bundle} ({err.strerror}); make {bundle.parent} "
                              "writable for this user") from None
    return str(bundle)


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # certificates are public; the folder (0700) limits access anyway
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path):  # noqa: ANN202 - a context manager
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ----- the child's environment --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Endpoints:
    """Where the child reaches the proxy: the reverse origin and the forward proxy URL."""

    reverse: str  # e.g. http://127.0.0.1:8080
    forward: str  # e.g. http://127.0.0.1:8081


def child_environment(base: Mapping[str, str], endpoints: Endpoints, bundle: str,
                      config_file: Path | None = None, client_key: str | None = None,
                      ) -> dict[str, str]:
    """The environment CMD runs with: proxy, trust and API variables; never the Qonic token.

    With a client key configured, the key (not a Qonic secret: it only opens this proxy) rides
    in the URLs' user info, which clients turn into (Proxy-)Authorization: Basic.
    """
    env = dict(base)
    env.pop(ENV_SECRET, None)  # the child has no use for our client secret
    forward, reverse = endpoints.forward, endpoints.reverse
    if client_key is not None:
        userinfo = "qonic:" + quote(client_key, safe="") + "@"
        forward = forward.replace("://", "://" + userinfo, 1)
        reverse = reverse.replace("://", "://" + userinfo, 1)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = forward
    env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
    # Node >= 22.21 / 24.5 honour the proxy variables only when asked; older Node ignores this.
    env["NODE_USE_ENV_PROXY"] = "1"
    env["QONIC_API_URL"] = reverse + "/v1"
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        env[name] = bundle
    if config_file is not None:  # a nested `qonic-proxy token`/`status` finds the same config
        env["QONIC_PROXY_CONFIG"] = str(config_file)
    return env


def _url_port(url: object) -> int | None:
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None


# ----- resolving CMD ------------------------------------------------------------------------
class _CommandError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _resolve(program: str, path: str | None) -> str:
    """The file to execute, or _CommandError with the shell's codes (127 missing, 126 not exec)."""
    if "/" in program:
        if not os.path.exists(program):
            raise _CommandError(f"{program}: no such file", 127)
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise _CommandError(f"{program}: permission denied (not an executable file)", 126)
        return program
    found = shutil.which(program, path=path)
    if found is None:
        raise _CommandError(f"{program}: command not found", 127)
    return found


# ----- running it -----------------------------------------------------------------------------
def run_command(cfg: Config, command: list[str]) -> int:
    """Run CMD against the proxy (running daemon, or a private one); return CMD's exit code."""
    if not command:
        raise QonicProxyError("exec needs a command: qonic-proxy exec -- CMD ARGS...")
    try:
        executable = _resolve(command[0], os.environ.get("PATH", os.defpath))
    except _CommandError as err:  # before any login: a typo should not cost one
        print(f"qonic-proxy: {err}", file=sys.stderr)
        return err.exit_code
    return asyncio.run(_run(cfg, command, executable))


class _Signals:
    """Before CMD runs, a signal aborts; afterwards it is forwarded to CMD."""

    def __init__(self) -> None:
        self.child: asyncio.subprocess.Process | None = None
        self.aborted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def __call__(self, signum: int) -> None:
        child = self.child
        if child is None:
            if not self.aborted.done():
                self.aborted.set_result(signum)
            return
        if child.returncode is not None:
            return
        if signum == signal.SIGINT and _terminal_already_delivered(child.pid):
            return  # Ctrl-C reached CMD directly; a second SIGINT means "hurry" to many tools
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)


def _terminal_already_delivered(child_pid: int) -> bool:
    """True when a SIGINT most likely came from the terminal to our whole (foreground) group."""
    try:
        if os.getpgid(child_pid) != os.getpgrp():
            return False
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: the signal was sent to us alone
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


async def _run(cfg: Config, command: list[str], executable: str) -> int:
    loop = asyncio.get_running_loop()
    signals = _Signals()
    for signum in FORWARDED_SIGNALS:
        loop.add_signal_handler(signum, signals, signum)
    try:
        bundle = await asyncio.to_thread(ca_bundle, cfg)
        async with _proxy(cfg, signals.aborted) as endpoints:
            if signals.aborted.done():
                return 128 + signals.aborted.result()
            key = None
            if cfg.proxy.client_key_file is not None:
                key = load_or_create_key(cfg.proxy.client_key_file)
            env = child_environment(os.environ, endpoints, bundle, cfg.path, key)
            try:
                signals.child = await asyncio.create_subprocess_exec(
                    *command, executable=executable, env=env)
            except FileNotFoundError:  # e.g. a script whose #! interpreter is missing
                print(f"qonic-proxy: {command[0]}: cannot execute (missing interpreter?)",
                      file=sys.stderr)
                return 126 if os.path.exists(executable) else 127
            except PermissionError:
                print(f"qonic-proxy: {command[0]}: permission denied", file=sys.stderr)
                return 126
            code = await signals.child.wait()
            return 128 - code if code < 0 else code
    finally:
        for signum in FORWARDED_SIGNALS:
            loop.remove_signal_handler(signum)


@contextlib.asynccontextmanager
async def _proxy(cfg: Config, aborted: asyncio.Future[int]) -> AsyncIterator[Endpoints]:
    """The running daemon when it serves this config with forward mode on, else a private one."""
    health = await asyncio.to_thread(_health, cfg)
    if health is not None:
        endpoints = _running_endpoints(cfg, health)
        if endpoints is not None:
            await _wait_for_running_login(cfg, endpoints, health, aborted)
            yield endpoints
            return
        log.info("the running qonic-proxy has forward mode off ([proxy] forward_port = 0); "
                 "using a private proxy for this command")
    async with _private_daemon(cfg, aborted) as endpoints:
        yield endpoints


def _health(cfg: Config) -> dict[str, object] | None:
    from qonic_proxy.cli.session import daemon_health

    return daemon_health(cfg)


def _running_endpoints(cfg: Config, health: Mapping[str, object]) -> Endpoints | None:
    """Endpoints of a running daemon that is ours (same API) and has a forward listener."""

    listeners = health.get("listeners")
    if not isinstance(listeners, Mapping):
        return None  # something else answers on our port
    if health.get("api_url") != str(Origin.parse(cfg.qonic.api_url)):
        return None  # a qonic-proxy for another API (another config) on this port
    reverse_port = _url_port(listeners.get("reverse")) or cfg.proxy.port
    forward_port = _url_port(listeners.get("forward"))
    if not forward_port:
        return None
    host = connect_host(cfg.proxy.listen_host)
    return Endpoints(f"http://{host}:{reverse_port}", f"http://{host}:{forward_port}")


async def _wait_for_running_login(cfg: Config, endpoints: Endpoints,
                                  health: Mapping[str, object],
                                  aborted: asyncio.Future[int]) -> None:
    """A running daemon that waits for a login: send the user there, then wait (bounded)."""
    if health.get("logged_in"):
        return
    login_page = f"{endpoints.reverse}/-/login"
    print(f"qonic-proxy: log in to Qonic to continue: open {login_page} in a browser "
          "(or run `qonic-proxy login`)", file=sys.stderr, flush=True)
    if cfg.oauth.open_browser:
        opener = asyncio.to_thread(webbrowser.open, login_page)
        _background(asyncio.get_running_loop().create_task(opener))

    async def logged_in() -> bool:
        current = await asyncio.to_thread(_health, cfg)
        return bool(current and current.get("logged_in"))

    await _wait_until(logged_in, cfg.oauth.login_timeout, aborted,
                      "the running qonic-proxy is still not logged in to Qonic")


async def _wait_until(condition, timeout: float, aborted: asyncio.Future[int],  # noqa: ANN001
                      what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if aborted.done():
            return
        if loop.time() >= deadline:
            raise LoginError(f"{what} after {timeout:g} s; the command was not started")
        await asyncio.wait({aborted}, timeout=LOGIN_POLL)


_BACKGROUND: set[asyncio.Task[object]] = set()


def _background(task: asyncio.Task[object]) -> None:
    """Keep a fire-and-forget task referenced; ignore its outcome (a missing browser is fine)."""
    _BACKGROUND.add(task)
    task.add_done_callback(lambda t: (_BACKGROUND.discard(t), t.cancelled() or t.exception()))


@contextlib.asynccontextmanager
async def _private_daemon(cfg: Config, aborted: asyncio.Future[int]) -> AsyncIterator[Endpoints]:
    """A daemon for this command only: ephemeral loopback ports, shared token cache."""
    from qonic_proxy.proxy.daemon import Daemon
    from qonic_proxy.sdnotify import Notifier

    private = private_config(cfg)
    daemon = Daemon(
        private,
        open_browser=webbrowser.open if cfg.oauth.open_browser else None,
        notifier=Notifier(None),  # under systemd, READY=1 is the unit's to send, not ours
        announce_ready=lambda line: log.debug("%s", line),  # CMD owns stdout
    )
    try:
        await daemon.start()
        forward = daemon.listeners.forward_url
        assert forward is not None  # private_config always names a forward port
        endpoints = Endpoints(daemon.listeners.reverse_url, forward)
        if not daemon.tokens.is_usable():
            print(f"qonic-proxy: waiting up to {cfg.oauth.login_timeout:g} s for the Qonic "
                  "login before running the command", file=sys.stderr, flush=True)

            async def usable() -> bool:
                if daemon.tokens.last_login_error and not daemon.tokens.login_pending:
                    raise LoginError(f"{daemon.tokens.last_login_error.rstrip('.')}; "
                                     "the command was not started")
                return daemon.tokens.is_usable()

            await _wait_until(usable, cfg.oauth.login_timeout, aborted,
                              "the Qonic login did not complete")
        yield endpoints
    finally:
        await daemon.stop(grace=5)


def private_config(cfg: Config) -> Config:
    """`cfg` for a private daemon: loopback only, ephemeral reverse port, a free forward port."""

    host = cfg.proxy.listen_host
    if not is_loopback_host(host):
        host = "127.0.0.1"  # the private proxy serves one local child; never expose it
    allowed = tuple(dict.fromkeys((*cfg.proxy.allowed_hosts, "localhost", "127.0.0.1", "::1")))
    proxy = dataclasses.replace(cfg.proxy, listen_host=host, port=0,
                                forward_port=free_port(host), allowed_hosts=allowed)
    return dataclasses.replace(cfg, proxy=proxy)


__all__: Sequence[str] = ("Endpoints", "ca_bundle", "ca_certificate", "child_environment",
                          "private_config", "run_command")
