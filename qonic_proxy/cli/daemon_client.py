"""Talking to the running daemon of this config: its /-/health and its pending /-/login.

A few lines of HTTP/1.1 on a plain socket to the configured reverse listener (not http.client,
whose email and ssl imports cost `status` more than the rest of its work): it never consults
HTTP(S)_PROXY (our own daemon is on loopback) and never follows a redirect (the Location of
/-/login is the answer). One request per connection (`Connection: close`), answers bounded.

Every connection is checked before a byte is sent: the kernel says which account holds the
listening socket we reached (`access.peer.listener_uid`), and unless that is the account the
daemon of this config runs as (see `discovery`), root, or the system unit's own account, the
connection is closed unused and `ForeignListener` names the account that holds the port. So
another local account that binds our port while the daemon is stopped gets no client key, no
pasted login address and no request.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from qonic_proxy.accounts import login_name
from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.hosts import connect_host
from qonic_proxy.records import record

if TYPE_CHECKING:  # socket is imported where a connection is made: `token` makes none
    import socket

MAX_ANSWER = 65536  # a /-/health answer is a few hundred bytes
SERVICE_ACCOUNT = "qonic-proxy"  # User= of systemd/qonic-proxy.service (DynamicUser=)
_expected: dict[tuple[str, str, int], int] = {}  # (config, host, port) -> the daemon's uid
_said: set[str] = set()


def account(uid: int | None) -> str:
    """`account NAME (uid N)`, as the sentences name who holds a port."""
    if uid is None:
        return "an account outside this user namespace (its uid is not known here)"
    name = login_name(uid)
    return f"account {name} (uid {uid})" if name else f"uid {uid} (no account of that number)"


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
    return login_name(holder) == SERVICE_ACCOUNT  # only root or systemd make that account


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


def open_connection(cfg: Config, timeout: float) -> socket.socket:
    """A connection to the daemon's reverse listener, checked (`check_listener`) before use."""
    import socket

    host = connect_host(cfg.proxy.listen_host).strip("[]")
    # getaddrinfo encodes a str host with the idna codec, whose import costs 2 ms; an ASCII
    # host (an address, "localhost") means the same as bytes
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    sock = socket.create_connection((name, cfg.proxy.port),  # type: ignore[arg-type]
                                    timeout=timeout)  # (typeshed allows str only)
    try:
        check_listener(cfg, sock)
    except BaseException:
        sock.close()
        raise
    return sock


@record
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def request(cfg: Config, method: str, path: str, *, timeout: float,
            headers: dict[str, str] | None = None, body: bytes = b"") -> Answer:
    """One request to the daemon (checked listener); OSError or ValueError when it fails."""
    host = f"{connect_host(cfg.proxy.listen_host)}:{cfg.proxy.port}"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if any(c in line for line in lines for c in "\r\n\0"):
        raise ValueError("a header value holds a line break or NUL")  # e.g. a pasted address
    with open_connection(cfg, timeout) as sock:
        # it may answer (and close) before reading a body: then read what it said
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)
        data = b""
        while len(data) <= MAX_ANSWER and (chunk := sock.recv(65536)):
            data += chunk
    head, separator, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, code = status_line.partition(" ")
    if not separator or not version.startswith("HTTP/1.") or not code[:3].isdigit():
        raise ValueError("not an HTTP answer")
    fields = {name.strip().lower(): value.strip() for name, _, value in
              (line.partition(":") for line in header_lines)}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        rest = _unchunked(rest)
    elif fields.get("content-length", "").isdigit():
        rest = rest[:int(fields["content-length"])]
    return Answer(int(code[:3]), fields, rest[:MAX_ANSWER])


def _unchunked(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


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
    from qonic_proxy.proxy.client_key import KEY_HEADER  # hashlib, secrets: only with a key

    try:
        return {KEY_HEADER: path.read_text().strip()}
    except OSError:
        return {}


def _get(cfg: Config, path: str, timeout: float) -> Answer:
    """GET `path` from the daemon's reverse listener."""
    return request(cfg, "GET", path, timeout=timeout, headers=key_header(cfg))


def fetch_health(cfg: Config, timeout: float = 1.0) -> dict[str, Any] | None:
    """The daemon's /-/health, None when none answers; ForeignListener for an impostor."""
    if not cfg.proxy.port:
        return None
    try:
        health = json.loads(_get(cfg, "/-/health", timeout).body)
    except ForeignListener:
        raise
    except (OSError, ValueError):
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
    try:
        answer = _get(cfg, "/-/login", timeout=5)
    except ForeignListener:
        raise
    except (OSError, ValueError) as err:
        raise QonicProxyError(f"cannot reach the running qonic-proxy ({err}); "
                              "is it still running?") from None
    status, location = answer.status, answer.headers.get("location")
    if status == 302 and location:
        return location
    if not 200 <= status < 300:
        raise QonicProxyError(f"the running qonic-proxy did not offer a login ({status}); "
                              "see its log")
    raise QonicProxyError("the running qonic-proxy did not offer a login; see its log")
