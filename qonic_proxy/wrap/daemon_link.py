"""Which proxy a wrapped program uses: the running daemon of this config, or a private one.

The running daemon is found through its /-/health on the configured reverse port; it is used
when it serves the same API with forward mode on (after its login, if it waits for one).
Otherwise `exec` starts a daemon of its own on ephemeral loopback ports that shares the token
cache, and stops it when the command ends. Either way the command starts only once a usable
token is held, or not at all.

Where the child needs a key (the daemon requires the client key, or `--read-only`), the daemon
mints one for it (`POST /-/keys`), tied to a process: `exec` itself, or the shell that evaluates
`env`'s exports. It is revoked when that process ends (the daemon watches it) and, for `exec`,
explicitly when CMD is done. The configured client key never reaches a child.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from qonic_proxy.cli.daemon_client import daemon_health, key_header
from qonic_proxy.config.model import Config
from qonic_proxy.errors import LoginError, QonicProxyError
from qonic_proxy.hosts import Origin, connect_host
from qonic_proxy.logs import logger
from qonic_proxy.records import field, record
from qonic_proxy.wrap.environment import Endpoints, private_config

if TYPE_CHECKING:  # asyncio, http.client and webbrowser are imported where used: `env` and
    import asyncio  # `token` import this module and need none of them


log = logger("qonic_proxy.exec")

LOGIN_POLL = 0.1  # seconds between checks while waiting for a login
PRIVATE_STOP_GRACE = 5  # seconds the private daemon gets to finish in-flight requests


@contextlib.asynccontextmanager
async def proxy_for(cfg: Config, aborted: asyncio.Future[int], *, read_only: bool = False,
                    ) -> AsyncIterator[Endpoints]:
    """The running daemon when it serves this config with forward mode on, else a private one.

    `aborted` resolves when a signal arrives before the command runs: waits end early then,
    and the caller checks it before starting anything.
    """
    import asyncio

    health = await asyncio.to_thread(daemon_health, cfg)
    if health is not None:
        endpoints = running_endpoints(cfg, health)
        if endpoints is not None:
            await _wait_for_running_login(cfg, endpoints, health, aborted)
            yield endpoints
            return
        log.info("the running qonic-proxy has forward mode off ([proxy] forward_port = 0); "
                 "using a private proxy for this command")
    async with _private_daemon(cfg, aborted, read_only) as endpoints:
        yield endpoints


def _url_port(url: object) -> int | None:
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def running_endpoints(cfg: Config, health: Mapping[str, Any]) -> Endpoints | None:
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


async def _wait_for_running_login(cfg: Config, endpoints: Endpoints, health: Mapping[str, Any],
                                  aborted: asyncio.Future[int]) -> None:
    """A running daemon that waits for a login: send the user there, then wait (bounded)."""
    if health.get("logged_in"):
        return
    login_page = f"{endpoints.reverse}/-/login"
    print(f"qonic-proxy: log in to Qonic to continue: open {login_page} in a browser "
          "(or run `qonic-proxy login`)", file=sys.stderr, flush=True)
    if cfg.oauth.open_browser:
        import webbrowser

        from qonic_proxy.oauth.login import open_browser_in_background

        open_browser_in_background(webbrowser.open, login_page)

    import asyncio

    async def logged_in() -> bool:
        current = await asyncio.to_thread(daemon_health, cfg)
        return bool(current and current.get("logged_in"))

    await wait_until(logged_in, cfg.oauth.login_timeout, aborted,
                     "the running qonic-proxy is still not logged in to Qonic")


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float,
                     aborted: asyncio.Future[int], what: str) -> None:
    """Poll `condition` until it holds or `aborted` resolves; LoginError after `timeout`."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if aborted.done():
            return
        if loop.time() >= deadline:
            raise LoginError(f"{what} after {timeout:g} s; the command was not started")
        await asyncio.wait({aborted}, timeout=LOGIN_POLL)


@contextlib.asynccontextmanager
async def _private_daemon(cfg: Config, aborted: asyncio.Future[int], read_only: bool,
                          ) -> AsyncIterator[Endpoints]:
    """A daemon for this command only: ephemeral loopback ports, shared token cache; with
    `read_only`, it limits our own account to GET, HEAD and OPTIONS too."""
    import webbrowser

    from qonic_proxy.proxy.daemon import Daemon  # mitmproxy: only when a private proxy is needed
    from qonic_proxy.sdnotify import Notifier

    daemon = Daemon(
        private_config(cfg, read_only=read_only),
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

            await wait_until(usable, cfg.oauth.login_timeout, aborted,
                             "the Qonic login did not complete")
        yield endpoints
    finally:
        await daemon.stop(grace=PRIVATE_STOP_GRACE)


@record
class ChildKey:
    """A key minted for one child (or shell); `key` is a secret, `key_id` names it."""

    key: str = field(repr=False)
    key_id: str


def key_needed(cfg: Config, read_only: bool) -> bool:
    """Whether a child needs a key: with peer identity and no narrowing, it needs none."""
    return read_only or cfg.proxy.client_key_file is not None


def _keys_call(cfg: Config, reverse: str, method: str, path: str, headers: dict[str, str],
               ) -> tuple[int, dict[str, Any]]:
    import http.client

    parts = urlsplit(reverse)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                            timeout=5)
    try:
        connection.request(method, path, headers={**key_header(cfg), **headers})
        response = connection.getresponse()
        body = response.read(65536)
    finally:
        connection.close()
    parsed = json.loads(body) if body else {}
    return response.status, parsed if isinstance(parsed, dict) else {}


def _http_exception() -> type[Exception]:
    import http.client  # already loaded by `_keys_call` when this is evaluated

    return http.client.HTTPException


def mint_key(cfg: Config, reverse: str, pid: int, *, read_only: bool) -> ChildKey:
    """A key from the daemon at `reverse`, valid while process `pid` lives."""
    from qonic_proxy.access.minted_keys import KEYS_PATH, PID_HEADER, READ_ONLY_HEADER  # asyncio

    headers = {PID_HEADER: str(pid), READ_ONLY_HEADER: "1" if read_only else "0"}
    try:
        status, body = _keys_call(cfg, reverse, "POST", KEYS_PATH, headers)
    except (OSError, _http_exception(), ValueError) as err:
        raise QonicProxyError(f"cannot get a key for the command from qonic-proxy at {reverse} "
                              f"({err}); is it still running?") from None
    key, key_id = body.get("key"), body.get("key_id")
    if status != 201 or not isinstance(key, str) or not isinstance(key_id, str):
        why = body.get("message") if isinstance(body.get("message"), str) else f"status {status}"
        raise QonicProxyError(f"qonic-proxy at {reverse} did not mint a key for the command "
                              f"({str(why).rstrip('.')}); restart it with this version if it "
                              "is older, or see its log")
    return ChildKey(key, key_id)


def revoke_key(cfg: Config, reverse: str, key: ChildKey) -> None:
    """Revoke `key` now (the daemon also does when its process ends); errors are only logged."""
    from qonic_proxy.access.minted_keys import KEYS_PATH

    try:
        _keys_call(cfg, reverse, "DELETE", f"{KEYS_PATH}/{key.key_id}", {})
    except (OSError, _http_exception(), ValueError) as err:
        log.debug("could not revoke key %s (%s); it ends with its process", key.key_id, err)
