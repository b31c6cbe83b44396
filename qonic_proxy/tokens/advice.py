"""What to tell a person when a login is needed: one sentence, fit for where the daemon runs.

Where no browser can be opened (no `DISPLAY`, `WAYLAND_DISPLAY` or `BROWSER`, or inside an SSH
session) the login must happen in a browser elsewhere, and the address it ends on comes back
through `qonic-proxy login --paste`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

PASTE_BACK = "then run `qonic-proxy login --paste` and paste the address it ends on"


def no_browser_here(environ: Mapping[str, str]) -> bool:
    """True when no browser can be opened on this machine for the person logging in."""
    if environ.get("SSH_CONNECTION") or environ.get("SSH_TTY"):
        return True
    return not any(environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER"))


def login_advice(*, page: str | None, authorize_url: str | None, headless: bool,
                 last_error: str | None = None) -> str:
    """The sentence for the log, /-/health `action`, STATUS= and the 401 JSON; after a failed
    login it starts with that failure's cause (a wrong client secret, a refused proxy, ...)."""
    if last_error:
        steps = login_advice(page=page, authorize_url=authorize_url, headless=headless)
        return f"The last login failed: {last_error.rstrip('.')}. {steps}"
    if headless:
        if authorize_url:
            return f"Log in to Qonic: open {authorize_url} in any browser, {PASTE_BACK}."
        return ("Log in to Qonic: run `qonic-proxy login --paste`, open the URL it prints in any "
                "browser, and paste the address it ends on.")
    where = f"open {page} in a browser, or " if page else ""
    return f"Log in to Qonic: {where}run `qonic-proxy login`."


def announcement(authorize_url: str, *, headless: bool) -> str:
    """The log line that starts a login (always shown, whatever the log level)."""
    if headless:
        return f"login needed: open {authorize_url} in any browser, {PASTE_BACK}"
    return f"login needed: open this URL in a browser: {authorize_url}"


def announce_login(log: logging.Logger, authorize_url: str, *, headless: bool,
                   replacing: bool = False, scripted: bool = False) -> None:
    """Log the announcement; printed when the log level hides warnings: it starts the login.

    Not a warning when nobody needs to act: a scripted browser (the demo) does the login, or a
    login asked for while logged in (`/-/login`) replaces a token that still works.
    """
    if scripted:
        log.info("logging in with the scripted browser; no browser needed")
        return
    if replacing:
        log.info("a new login was started while logged in (the current token is used until it "
                 "completes): open this URL in a browser: %s", authorize_url)
        return
    line = announcement(authorize_url, headless=headless)
    if log.isEnabledFor(logging.WARNING):
        log.warning("%s", line)
    else:
        print(f"qonic-proxy: {line}", file=sys.stderr, flush=True)
