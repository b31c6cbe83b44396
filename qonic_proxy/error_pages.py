"""Make mitmproxy's own error answers (502 upstream down, TLS failure, bad request) JSON.

mitmproxy writes these as small HTML pages from one module-level function of its HTTP/1 layer,
with no hook to change them. Our clients are scripts, so we replace that function with one that
writes the same status and message as JSON. This is the only mitmproxy internal we patch; the
end-to-end tests for "upstream down" and "untrusted upstream certificate" cover it on both
supported mitmproxy versions.
"""

from __future__ import annotations

import json

from mitmproxy import http, version
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1

_WHAT_TO_DO = {
    502: "qonic-proxy could not reach the Qonic API; check the network and [qonic] api_url "
         "(and [qonic] ca_file if the certificate is not trusted), then retry.",
    504: "the Qonic API did not answer in time; retry later.",
}


def make_json_error_response(status_code: int, message: str = "") -> bytes:
    body = {
        "error": "upstream_error" if status_code in _WHAT_TO_DO else "proxy_error",
        "status": status_code,
        "message": message[:500],
        "what_to_do": _WHAT_TO_DO.get(status_code, "check the request and retry."),
    }
    response = http.Response.make(
        status_code,
        json.dumps(body).encode() + b"\n",
        http.Headers(
            Server=version.MITMPROXY,
            Connection="close",
            Content_Type="application/json",
            Cache_Control="no-store",
        ),
    )
    return http1.assemble_response(response)


def install() -> None:
    """Idempotent: point mitmproxy's HTTP/1 error writer at ours."""
    _http1.make_error_response = make_json_error_response
