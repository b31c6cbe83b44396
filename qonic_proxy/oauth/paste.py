"""A pasted address: the one the browser ended on, given back by hand (`login --paste`).

On a machine other than the one that waits, the browser cannot connect to the loopback callback
and shows "can't connect"; the person copies its address bar. This accepts the whole URL or just
its query string and checks it exactly like a real callback (`authorization_response`), so a
pasted address earns nothing a request to the callback would not. An `error=` address is refused
here too (BadRequest), so the login keeps waiting for a better one.
"""

from __future__ import annotations

import urllib.parse

from qonic_proxy.oauth.authorization_response import (
    AuthorizationResponse,
    BadRequest,
    parse_authorization_response,
)

# How `login --paste` hands an address to a running daemon (the CLI sends, the daemon checks).
PASTE_PATH = "/-/login/paste"
PASTE_HEADER = "X-Qonic-Proxy-Paste"  # no web page can send it without a (refused) preflight
# The daemon answers /-/ paths at requestheaders, before any body is read: the CLI also sends
# the address in this header, used when the body is not there (yet).
ADDRESS_HEADER = "X-Qonic-Proxy-Paste-Address"
MAX_PASTE = 8 * 1024  # an authorize redirect is a few hundred characters
PASTE_AGAIN = "; paste the whole address from the browser's address bar"


def parse_pasted(text: str, *, path: str, state: str) -> AuthorizationResponse:
    """The code in a pasted address, or BadRequest with one sentence saying what to paste."""
    text = text.strip()
    if not text or len(text) > MAX_PASTE or any(ch.isspace() for ch in text):
        raise BadRequest(400, "That is not the address the browser ended on" + PASTE_AGAIN)
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.query:
            raise BadRequest(400, "That address carries no login result" + PASTE_AGAIN)
        got_path, query = parts.path or "/", parts.query
    else:
        got_path, query = path, text.removeprefix("?")
    if "=" not in query:
        raise BadRequest(400, "That is not the address the browser ended on" + PASTE_AGAIN)
    try:
        result = parse_authorization_response("GET", f"{got_path}?{query}", path=path,
                                              state=state)
    except BadRequest as bad:
        raise BadRequest(bad.status, f"{bad}; paste the address this login ended on") from None
    if result.error is not None:
        said = f"{result.error}: {result.description}" if result.description else result.error
        raise BadRequest(400, f"Qonic refused the login ({said}); open the login URL again, "
                              "approve the access, and paste the address it ends on")
    return result
