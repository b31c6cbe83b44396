"""One HTTP request/response as the routes see it: the body in pieces, and ways to answer.

Why apart from the server: the routes need body reading with limits and a few response shapes,
but nothing of sockets or threads; and the handler class then does nothing but routing.
"""

from __future__ import annotations

import contextlib
import html
import json
import socket
import struct
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from qonic_proxy.sandbox.patterns import PIECE

MAX_FORM_BODY = 64 * 1024  # forms and small JSON bodies
DRAIN_LIMIT = 1024 * 1024  # an unread body up to this size is drained to keep the connection
_HTML_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class BodyError(Exception):
    """The request body is malformed or the client went away mid-body."""


class Exchange:
    """The request being served on `handler`, with its body state and response helpers."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.handler = handler
        self.method = handler.command
        self.headers = handler.headers
        parts = urlsplit(handler.path)
        self.path = parts.path
        self.query = parts.query
        self.sent = False
        self._state = "read"  # read | unread
        self._chunked = False
        self._length = 0

    @property
    def http11(self) -> bool:
        return self.handler.request_version == "HTTP/1.1"

    # -- request body --------------------------------------------------------------------
    def prepare_body(self) -> None:
        """Decide how the body is framed; refuse ambiguous framing (request smuggling)."""
        te = self.headers.get_all("Transfer-Encoding") or []
        cl = self.headers.get_all("Content-Length") or []
        if te and cl:
            raise BodyError("Content-Length and Transfer-Encoding must not both be sent.")
        if te:
            if [v.strip().lower() for v in te] != ["chunked"]:
                raise BodyError("Only Transfer-Encoding: chunked is supported.")
            self._chunked, self._length, self._state = True, -1, "unread"
        elif cl:
            if len(cl) != 1 or not cl[0].strip().isdigit():
                raise BodyError("Content-Length is malformed.")
            self._length = int(cl[0])
            self._state = "unread" if self._length else "read"

    def body_chunks(self) -> Iterator[bytes]:
        """Yield the request body in pieces (Content-Length or chunked), never all at once."""
        if self._state != "unread":
            return
        self._state = "read"
        if not self._chunked:
            yield from self._exactly(self._length)
            return
        rfile = self.handler.rfile
        while True:
            line = rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise BodyError("A chunk size line is malformed.")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError("A chunk size line is malformed.") from None
            if size == 0:
                break
            yield from self._exactly(size)
            if rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BodyError("A chunk is not followed by CRLF.")
        while True:  # trailers
            line = rfile.readline(8192)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                raise BodyError("The chunked trailer is malformed.")

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size:
            data = self.handler.rfile.read(min(size, PIECE))
            if not data:
                raise BodyError("The request body ended early.")
            size -= len(data)
            yield data

    def read_small_body(self, limit: int) -> bytes:
        out = bytearray()
        for chunk in self.body_chunks():
            out += chunk
            if len(out) > limit:
                raise BodyError("The request body is too large for this endpoint.")
        return bytes(out)

    def _settle_body(self, headers: dict[str, str]) -> None:
        """Keep the connection in sync: drain a small unread body, else close after answering."""
        if self._state != "unread":
            return
        if not self._chunked and self._length <= DRAIN_LIMIT:
            try:
                for _ in self.body_chunks():
                    pass
                return
            except BodyError:
                pass
        self._state = "read"
        self.handler.close_connection = True
        headers["Connection"] = "close"

    # -- responses -----------------------------------------------------------------------
    def start(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers; the caller writes the body with `write`."""
        self._settle_body(headers)
        self.sent = True
        h = self.handler
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        if h.close_connection and "Connection" not in headers:
            h.send_header("Connection", "close")
        h.end_headers()

    def write(self, data: bytes) -> None:
        self.handler.wfile.write(data)

    def abort(self) -> None:
        """Reset the connection (SO_LINGER 0, so the close sends RST); nothing more is sent."""
        with contextlib.suppress(OSError):
            self.handler.wfile.flush()
        conn: socket.socket = self.handler.connection
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.drop()

    def drop(self) -> None:
        """End this connection after the handler returns, without (further) answer."""
        self.sent = True
        self.handler.close_connection = True

    def send_bytes(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        self.start(status, all_headers)
        if self.method != "HEAD":
            self.write(body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, indent=None).encode("utf-8")
        self.send_bytes(status, body, "application/json", headers)

    def send_error(self, status: int, code: str, description: str, **headers: str) -> None:
        """The JSON error body every non-OAuth refusal uses."""
        self.send_json(status, {"error": code, "error_description": description}, headers)

    def send_html(self, status: int, title: str, body_html: str) -> None:
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body>{body_html}</body></html>"
        ).encode()
        self.send_bytes(status, page, "text/html; charset=utf-8", dict(_HTML_HEADERS))

    def redirect(self, location: str) -> None:
        self.start(302, {"Location": location, "Content-Length": "0", "Cache-Control": "no-store"})

    def not_found(self) -> None:
        self.send_error(404, "not_found", "No such resource.")

    def method_not_allowed(self, allowed: str) -> None:
        self.send_error(405, "method_not_allowed", f"Use {allowed}.", Allow=allowed)
