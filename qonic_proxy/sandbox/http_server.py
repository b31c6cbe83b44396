"""The sandbox's HTTP plumbing: a threading server with TLS in each connection's own thread,
prompt stop, lingering close, and internal errors reported without their message.

Why apart: none of this is about OAuth or Qonic; the request handler only builds an Exchange
and hands it to the route table.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import quote

from qonic_proxy.sandbox.exchange import BodyError, Exchange
from qonic_proxy.sandbox.patterns import PIECE
from qonic_proxy.sandbox.routing import Context, Route, dispatch

HANDSHAKE_TIMEOUT = 10.0
CONNECTION_IDLE_TIMEOUT = 60.0
LINGER_TIMEOUT = 1.0
LINGER_BYTES = 1024 * 1024
_QUIET_ERRORS = (ConnectionError, TimeoutError, ssl.SSLError)  # the client went away


class SandboxServer(HTTPServer):
    """HTTPServer whose TLS handshake happens in the connection's own thread, tracked for stop."""

    daemon_threads = True

    def __init__(
        self,
        ctx: Context,
        table: Sequence[Route],
        address: tuple[str, int],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.ctx = ctx
        self.table = table
        self.ssl_context = ssl_context
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._conn_lock = threading.Lock()
        self._conns: dict[threading.Thread, socket.socket] = {}
        self._closing = False
        super().__init__(address, RouteHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); we need no server_name.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="sandbox-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._conns[thread] = request
        thread.start()

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        me = threading.current_thread()
        conn: socket.socket = sock
        try:
            if self.ssl_context is not None:
                sock.settimeout(HANDSHAKE_TIMEOUT)
                # wrap_socket takes over the file descriptor: register the new object before
                # the (possibly slow) handshake so that stop() can interrupt it.
                conn = self.ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
                with self._conn_lock:
                    self._conns[me] = conn
                    closing = self._closing
                if closing:
                    return
                try:
                    conn.do_handshake()
                except (OSError, ssl.SSLError):
                    return
            self.finish_request(conn, client_address)
        except Exception:
            self.handle_error(conn, client_address)
        finally:
            with self._conn_lock:
                self._conns.pop(me, None)
            try:
                lingering_close(conn)
            finally:
                if conn is not sock:
                    sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        report_internal_error()

    def close_connections(self, timeout: float) -> None:
        """Wake every connection thread (idle keep-alive ones block in recv) and join them."""
        with self._conn_lock:
            self._closing = True
            items = list(self._conns.items())
        for _, conn in items:
            # The plain socket's shutdown: SSLSocket.shutdown would drop its SSL object
            # under the feet of the thread still using it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread, _ in items:
            thread.join(max(0.0, deadline - time.monotonic()))


def lingering_close(conn: socket.socket) -> None:
    """Close without a reset: half-close, then discard what the client still sends for a moment.

    Closing a socket with unread input makes the kernel send RST, which can destroy a response
    (say a 400 to a body we refused to read) before the client has read it.
    """
    try:
        if aborted(conn):  # a route asked for a reset (Exchange.abort): no FIN first
            return
        # The plain socket's methods: the TLS layer is done with, we only discard bytes.
        socket.socket.shutdown(conn, socket.SHUT_WR)
        conn.settimeout(LINGER_TIMEOUT)
        deadline = time.monotonic() + LINGER_TIMEOUT
        discarded = 0
        while time.monotonic() < deadline and discarded < LINGER_BYTES:
            data = socket.socket.recv(conn, PIECE)
            if not data:
                break
            discarded += len(data)
    except OSError:
        pass
    finally:
        conn.close()


def aborted(conn: socket.socket) -> bool:
    """True when SO_LINGER is on with a zero timeout: closing must reset the connection."""
    try:
        on, seconds = struct.unpack("ii", conn.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
    except (OSError, struct.error):
        return False
    return bool(on) and seconds == 0


def report_internal_error() -> None:
    """Print where an internal error happened, without its message (it might hold a value)."""
    exc_type, _, tb = sys.exc_info()
    if exc_type is None or issubclass(exc_type, _QUIET_ERRORS):
        return
    frames = traceback.extract_tb(tb)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    print(f"sandbox: internal error {exc_type.__name__} at {where}", file=sys.stderr, flush=True)


class RouteHandler(BaseHTTPRequestHandler):
    """Parses the request line and headers, then looks the route up; nothing else."""

    protocol_version = "HTTP/1.1"
    server_version = "qonic-sandbox"
    # the head and the body go out in separate writes: with Nagle on, the body waits for the
    # client's delayed ACK of the head (40 ms on Linux) on every response
    disable_nagle_algorithm = True
    timeout = CONNECTION_IDLE_TIMEOUT
    server: SandboxServer

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # The default logs the request line, query included (codes, state): never.
        return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.server.ctx.settings.verbose:
            raw_path = getattr(self, "path", None) or "-"
            path = quote(raw_path.split("?", 1)[0], safe="/-._~%:@!$&'()*+,;=")
            status = code.value if isinstance(code, HTTPStatus) else code
            method = quote(self.command or "-", safe="")
            print(f"sandbox: {method} {path} {status}", file=sys.stderr, flush=True)

    def handle(self) -> None:
        try:
            super().handle()
        except _QUIET_ERRORS:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        ex = Exchange(self)
        ctx = self.server.ctx
        if self.headers.get("Authorization") is not None:
            ctx.grants.count("authorization_headers_seen")
        try:
            ex.prepare_body()
            dispatch(self.server.table, ctx, ex)
        except BodyError as exc:
            self.close_connection = True
            if not ex.sent:
                ex.send_error(400, "invalid_request", str(exc))
        except _QUIET_ERRORS:
            self.close_connection = True
        except Exception:
            report_internal_error()
            self.close_connection = True
            if not ex.sent:
                ex.send_error(500, "server_error", "Internal.")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815
