"""A scripted browser for $BROWSER: follows the authorize URL like a person who clicks "Allow".

Python's webbrowser runs `$BROWSER <url>`. This script fetches the URL (trusting $SANDBOX_CA),
answers the sandbox's consent form with $BROWSER_DECISION (approve/deny/ignore), follows the
redirect into qonic-proxy's loopback callback, and appends one line to $BROWSER_LOG so tests can
tell whether (and how often) a browser was started.
"""

from __future__ import annotations

import os
import re
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request


def main(url: str) -> int:
    log = os.environ.get("BROWSER_LOG")
    if log:
        with open(log, "a") as f:
            f.write("opened\n")
    decision = os.environ.get("BROWSER_DECISION", "approve")
    if decision == "ignore":
        return 0
    context = ssl.create_default_context(cafile=os.environ.get("SANDBOX_CA") or None)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
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
            print(f"browser: {err.code} from the callback", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
