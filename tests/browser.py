"""A scripted browser for $BROWSER: follows the authorize URL like a person who clicks "Allow".

Python's webbrowser runs `$BROWSER <url>`. This script fetches the URL (trusting $SANDBOX_CA),
answers the sandbox's consent form with $BROWSER_DECISION (approve/deny/ignore), follows the
redirect into qonic-proxy's loopback callback, and appends one line to $BROWSER_LOG so tests can
tell whether (and how often) a browser was started.

With $BROWSER_STOP_AT_CALLBACK set it is a browser on another machine: it does not connect to
the loopback callback but prints the address it would have opened (what `login --paste` takes).
"""

from __future__ import annotations

import os
import re
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request


class _StopAtCallback(urllib.request.HTTPRedirectHandler):
    """Follow redirects within the authorization server; stop at any other host (the callback)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.stopped_at: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urllib.parse.urlsplit(newurl).netloc != self.server:
            self.stopped_at = newurl
            return None  # urllib raises HTTPError for the redirect: we never connect
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def main(url: str) -> int:
    log = os.environ.get("BROWSER_LOG")
    if log:
        with open(log, "a") as f:
            f.write("opened\n")
    decision = os.environ.get("BROWSER_DECISION", "approve")
    if decision == "ignore":
        return 0
    context = ssl.create_default_context(cafile=os.environ.get("SANDBOX_CA") or None)
    stop = _StopAtCallback(urllib.parse.urlsplit(url).netloc)
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)]
    if os.environ.get("BROWSER_STOP_AT_CALLBACK"):
        handlers.append(stop)
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=20) as response:
            page = response.read().decode("utf-8", "replace")
            final = response.geturl()
    except urllib.error.HTTPError as err:
        print(f"browser: {err.code} from {err.url}", file=sys.stderr)
        return 0
    match = re.search(r'name="consent_id" value="([^"]+)"', page)
    if match:  # the consent page: click the button
        form = urllib.parse.urlencode({"consent_id": match.group(1), "decision": decision})
        consent_url = urllib.parse.urljoin(final, "/v1/auth/consent")
        try:
            with opener.open(consent_url, data=form.encode(), timeout=20) as response:
                response.read()
        except urllib.error.HTTPError as err:
            if stop.stopped_at is None:
                print(f"browser: {err.code} from the callback", file=sys.stderr)
    if stop.stopped_at is not None:
        print(stop.stopped_at)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
