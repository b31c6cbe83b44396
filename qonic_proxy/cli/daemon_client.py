"""Talking to the running daemon of this config: its /-/health and its pending /-/login.

Plain `http.client` on the configured reverse listener: it never consults HTTP(S)_PROXY (our
own daemon is on loopback) and never follows a redirect (the Location of /-/login is the answer).
"""

from __future__ import annotations

import http.client
import json
from typing import Any

from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.hosts import connect_host
from qonic_proxy.proxy.client_key import KEY_HEADER

MAX_ANSWER = 65536  # a /-/health answer is a few hundred bytes


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
    connection = http.client.HTTPConnection(connect_host(cfg.proxy.listen_host), cfg.proxy.port,
                                            timeout=timeout)
    try:
        connection.request("GET", path, headers=key_header(cfg))
        response = connection.getresponse()
        return response.status, response.headers, response.read(MAX_ANSWER)
    finally:
        connection.close()


def daemon_health(cfg: Config, timeout: float = 1.0) -> dict[str, Any] | None:
    """The running daemon's /-/health (200 logged in, 503 waiting for a login), if one answers."""
    if not cfg.proxy.port:
        return None
    try:
        _status, _headers, body = _get(cfg, "/-/health", timeout)
        health = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return health if isinstance(health, dict) else None


def daemon_login_url(cfg: Config) -> str:
    """The authorize URL of the daemon's pending login: the Location of its /-/login."""
    try:
        status, headers, _body = _get(cfg, "/-/login", timeout=5)
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
