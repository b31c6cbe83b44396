"""A scripted browser for $BROWSER: follows the authorize URL like a person who clicks "Allow".

Python's webbrowser runs `$BROWSER <url>`. This script fetches the URL (trusting $SANDBOX_CA),
answers the sandbox's consent form with $BROWSER_DECISION (approve/deny/ignore), follows the
redirect into qonic-proxy's loopback callback, and appends one line to $BROWSER_LOG so tests can
tell whether (and how often) a browser was started.

With $BROWSER_RECORD set it appends one JSON line (argv, environment, pid, parent pid) to that
file, and with $BROWSER_HOLD set it then waits (at most 60 s) until that file exists, so a test
can look at the running browser and its parent.

With $BROWSER_STOP_AT_CALLBACK set it is a browser on another machine: it does not connect to
the loopback callback but prints the address it would have opened (what `login --paste` takes).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class _StopAtCallback(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the start URL, the authorization server); stop at the callback: the
    first redirect that carries an authorization response (`state` with `code` or `error`)."""

    def __init__(self) -> None:
        self.stopped_at: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(newurl).query)
        if "state" in query and ("code" in query or "error" in query):
            self.stopped_at = newurl
            return None  # urllib raises HTTPError for the redirect: we never connect
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _proc(pid: int) -> dict[str, object]:
    """The argv and environment of process `pid` as /proc shows them (Linux)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode("utf-8", "replace").split("\0")
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return {}
    return {"argv": argv, "environ": environ}


def main(url: str) -> int:
    log = os.environ.get("BROWSER_LOG")
    if log:
        with open(log, "a") as f:
            f.write("opened\n")
    record, hold = os.environ.get("BROWSER_RECORD"), os.environ.get("BROWSER_HOLD")
    if record:
        with open(record, "a") as f:
            f.write(json.dumps({"argv": sys.argv, "environ": dict(os.environ),
                                "pid": os.getpid(), "ppid": os.getppid(),
                                "parent": _proc(os.getppid())}) + "\n")
    deadline = time.monotonic() + 60
    while hold and not os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.05)
    decision = os.environ.get("BROWSER_DECISION", "approve")
    if decision == "ignore":
        return 0
    context = ssl.create_default_context(cafile=os.environ.get("SANDBOX_CA") or None)
    stop = _StopAtCallback()
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
