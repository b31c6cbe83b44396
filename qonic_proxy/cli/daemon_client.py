"""Talking to the running daemon of this config: its /-/health and its pending /-/login.

Plain `http.client` on the configured reverse listener: it never consults HTTP(S)_PROXY (our
own daemon is on loopback) and never follows a redirect (the Location of /-/login is the answer).

Every connection is checked before a byte is sent: the kernel says which account holds the
listening socket we reached (`access.peer.listener_uid`), and unless that is the account the
daemon of this config runs as (see `discovery`), root, or the system unit's own account, the
connection is closed unused and `ForeignListener` names the account that holds the port. So
another local account that binds our port while the daemon is stopped gets no client key, no
pasted login address and no request.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.hosts import connect_host
from qonic_proxy.proxy.client_key import KEY_HEADER

if TYPE_CHECKING:  # http.client (and the email package under it) only when we really talk
    import http.client
    import socket

MAX_ANSWER = 65536  # a /-/health answer is a few hundred bytes
SERVICE_ACCOUNT = "qonic-proxy"  # User= of systemd/qonic-proxy.service (DynamicUser=)
_expected: dict[tuple[str, str, int], int] = {}  # (config, host, port) -> the daemon's uid
_said: set[str] = set()


def account(uid: int | None) -> str:
    """`account NAME (uid N)`, as the sentences name who holds a port."""
    if uid is None:
        return "an account outside this user namespace (its uid is not known here)"
    import pwd

    try:
        return f"account {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid} (no account of that number)"


def _where(cfg: Config) -> tuple[str, str, int]:
    return (str(cfg.path), cfg.proxy.listen_host, cfg.proxy.port)


def expect_owner(cfg: Config, uid: int) -> None:
    """Record that this config's daemon runs as `uid` (its runtime file says so)."""
    _expected[_where(cfg)] = uid


def expected_owner(cfg: Config) -> int:
    """The account this config's daemon runs as: as discovery found it, else our own."""
    return _expected.get(_where(cfg), os.getuid())


class ForeignListener(QonicProxyError):
    """The port is held by an account that is not the daemon's: nothing was sent to it."""

    def __init__(self, cfg: Config, holder: int | None, expected: int) -> None:
        super().__init__(
            f"port {cfg.proxy.port} on {connect_host(cfg.proxy.listen_host)} is held by "
            f"{account(holder)}, not by this config's qonic-proxy (which runs as "
            f"{account(expected)}), so nothing was sent to it; stop that program, or start "
            "qonic-proxy on a free [proxy] port")
        self.holder = holder


def _trusted(holder: int, expected: int) -> bool:
    if holder in (expected, 0):  # root can read our key file anyway
        return True
    import pwd

    try:
        return pwd.getpwuid(holder).pw_name == SERVICE_ACCOUNT  # only root/systemd make it
    except KeyError:
        return False


def check_listener(cfg: Config, sock: socket.socket) -> None:
    """ForeignListener unless the listener `sock` reached is held by the expected account.

    Where the kernel cannot tell (not Linux, a non-loopback listen_host), nothing is checked:
    the client key is then what protects the daemon, as the README says.
    """
    if not sys.platform.startswith("linux"):
        return
    from qonic_proxy.access.peer import is_loopback, listener_uid

    if not is_loopback(sock.getpeername()[0]):
        return
    holder, expected = listener_uid(sock), expected_owner(cfg)
    if holder is None or not _trusted(holder, expected):
        raise ForeignListener(cfg, holder, expected)


def open_connection(cfg: Config, timeout: float) -> http.client.HTTPConnection:
    """A connection to the daemon's reverse listener, checked (`check_listener`) before use."""
    import http.client

    connection = http.client.HTTPConnection(connect_host(cfg.proxy.listen_host), cfg.proxy.port,
                                            timeout=timeout)
    try:
        connection.connect()
        assert connection.sock is not None
        check_listener(cfg, connection.sock)
    except BaseException:
        connection.close()
        raise
    return connection


def tell_once(sentence: str) -> None:
    """One sentence on stderr, once per process (the verbs poll the daemon)."""
    if sentence not in _said:
        _said.add(sentence)
        print(f"qonic-proxy: {sentence}", file=sys.stderr, flush=True)


def key_header(cfg: Config) -> dict[str, str]:
    """The client-key header for talking to our own daemon, when a key is configured."""
    path = cfg.proxy.client_key_file
    if path is None:
        return {}
    try:
        return {KEY_HEADER: path.read_text().strip()}
    except OSError:
        return {}


def _get(cfg: Config, path: str, timeout: float) -> tuple[int, http.client.HTTPMessage, bytes]:
    """GET `path` from the daemon's reverse listener: status, headers, body (bounded)."""
    connection = open_connection(cfg, timeout)
    try:
        connection.request("GET", path, headers=key_header(cfg))
        response = connection.getresponse()
        return response.status, response.headers, response.read(MAX_ANSWER)
    finally:
        connection.close()


def fetch_health(cfg: Config, timeout: float = 1.0) -> dict[str, Any] | None:
    """The daemon's /-/health, None when none answers; ForeignListener for an impostor."""
    import http.client

    if not cfg.proxy.port:
        return None
    try:
        _status, _headers, body = _get(cfg, "/-/health", timeout)
        health = json.loads(body)
    except ForeignListener:
        raise
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return health if isinstance(health, dict) else None


def daemon_health(cfg: Config, timeout: float = 1.0) -> dict[str, Any] | None:
    """The running daemon's /-/health (200 logged in, 503 waiting for a login), if one answers.

    A port held by another account counts as no daemon (said once, on stderr).
    """
    try:
        return fetch_health(cfg, timeout)
    except ForeignListener as err:
        tell_once(str(err))
        return None


def daemon_login_url(cfg: Config) -> str:
    """The authorize URL of the daemon's pending login: the Location of its /-/login."""
    import http.client

    try:
        status, headers, _body = _get(cfg, "/-/login", timeout=5)
    except ForeignListener:
        raise
    except (OSError, http.client.HTTPException) as err:
        raise QonicProxyError(f"cannot reach the running qonic-proxy ({err}); "
                              "is it still running?") from None
    location = headers.get("Location")
    if status == 302 and location:
        return location
    if not 200 <= status < 300:
        raise QonicProxyError(f"the running qonic-proxy did not offer a login ({status}); "
                              "see its log")
    raise QonicProxyError("the running qonic-proxy did not offer a login; see its log")
