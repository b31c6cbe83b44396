"""Send a request again, once, with a fresh token, after Qonic answered 401.

mitmproxy cannot restart a flow from an addon, so the one retry is made here with http.client
(to the exact API origin, TLS verified against the same trust as mitmproxy uses) and its answer
becomes the client's response. Only small requests are retried (their body was kept), and only
answers up to MAX_RETRY_RESPONSE are taken; anything larger is left to the client's own retry,
which succeeds because the token was refreshed already.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass

MAX_RETRY_RESPONSE = 16 * 1024 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "content-length"}


@dataclass
class RetryAnswer:
    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]  # as mitmproxy's Headers takes them (latin-1, lossless)
    body: bytes


def resend(*, host: str, port: int, context: ssl.SSLContext, method: str, target: str,
           headers: list[tuple[str, str]], body: bytes | None, timeout: float = 60,
           ) -> RetryAnswer | None:
    """Blocking (run it in a thread). None when the answer is too large to hold."""
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                connection.putheader(name, value)
        if body:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_RETRY_RESPONSE:
            return None
        data = response.read(MAX_RETRY_RESPONSE + 1)
        if len(data) > MAX_RETRY_RESPONSE:
            return None
        kept = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()
                if k.lower() not in HOP_BY_HOP]
        return RetryAnswer(response.status, response.reason, kept, data)
    finally:
        connection.close()
