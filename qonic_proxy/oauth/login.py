"""The browser login use case: start a LoginAttempt, show the URL, open a browser, wait.

The pieces (callback server, token client) do the work; this only orders them, and keeps a
browser opener that blocks (a `$BROWSER` command that waits) off the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from qonic_proxy.config.model import Config
from qonic_proxy.oauth.callback import LoginAttempt
from qonic_proxy.oauth.messages import clean
from qonic_proxy.oauth.tokenset import TokenSet

log = logging.getLogger(__name__)


def open_browser_in_background(open_browser: Callable[[str], object], url: str) -> None:
    """Run the browser opener in a daemon thread: it may block until a $BROWSER command exits.

    A daemon thread (not the default executor) so that a browser that never returns cannot keep
    the process alive at exit. Its result is ignored: False only means "no browser here", and the
    URL has been printed already.
    """

    def run() -> None:
        try:
            opened = open_browser(url)
        except Exception as exc:
            log.warning(
                "could not start a web browser (%s); open the login URL shown above by hand",
                clean(str(exc), 120),
            )
            return
        if opened is False:
            log.info("no web browser found; open the login URL shown above by hand")

    threading.Thread(target=run, name="qonic-proxy-browser", daemon=True).start()


async def login(
    cfg: Config,
    *,
    open_browser: Callable[[str], object] | None,
    announce: Callable[[str], None],
) -> TokenSet:
    """Run one browser login end to end and return the tokens (not yet saved)."""
    attempt = LoginAttempt(cfg)
    await attempt.start()
    try:
        announce(attempt.authorize_url)  # always: the machine may have no browser at all
        if open_browser is not None:
            open_browser_in_background(open_browser, attempt.authorize_url)
        return await attempt.wait()
    finally:
        await attempt.close()
