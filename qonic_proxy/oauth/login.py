"""The browser login use case: start a LoginAttempt, show the URL, open a browser, wait.

The pieces (callback server, token client) do the work; this only orders them, and keeps a
browser opener that blocks (a `$BROWSER` command that waits) off the event loop. With `paste`
(`login --paste`) it also reads lines, the address the browser ended on, while the callback
listens: the first valid one wins, a bad one gets one sentence and another chance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import webbrowser
from collections.abc import Callable

from qonic_proxy.config.model import Config
from qonic_proxy.errors import LoginError
from qonic_proxy.oauth.authorization_response import BadRequest
from qonic_proxy.oauth.browser import open_without_secrets
from qonic_proxy.oauth.callback import LoginAttempt
from qonic_proxy.oauth.messages import clean
from qonic_proxy.oauth.tokenset import TokenSet

log = logging.getLogger(__name__)


def open_browser_in_background(open_browser: Callable[[str], object], url: str) -> None:
    """Run the browser opener in a daemon thread: it may block until a $BROWSER command exits.

    A daemon thread (not the default executor) so that a browser that never returns cannot keep
    the process alive at exit. Its result is ignored: False only means "no browser here", and the
    URL has been printed already. The standard opener, `webbrowser.open`, is run as
    `open_without_secrets`: in a child whose environment holds no secret of ours.
    """
    if open_browser is webbrowser.open:
        open_browser = open_without_secrets

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


def read_lines_in_background(read_line: Callable[[], str]) -> asyncio.Queue[str | None]:
    """Lines from a blocking `read_line` (stdin's readline), fed to a queue; None at the end.

    A daemon thread: a read that never returns cannot keep the process alive at exit.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def run() -> None:
        while True:
            try:
                line: str | None = read_line() or None
            except (OSError, ValueError):
                line = None
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens any more
                loop.call_soon_threadsafe(lines.put_nowait, line)
            if line is None:
                return

    threading.Thread(target=run, name="qonic-proxy-paste", daemon=True).start()
    return lines


async def _take_pasted(attempt: LoginAttempt, lines: asyncio.Queue[str | None],
                       tell: Callable[[str], None]) -> None:
    while (line := await lines.get()) is not None:
        if not line.strip():
            continue
        try:
            attempt.submit(line)
        except (BadRequest, LoginError) as bad:
            tell(str(bad))
        else:
            return


async def login(
    cfg: Config,
    *,
    open_browser: Callable[[str], object] | None,
    announce: Callable[[str], None],
    paste: tuple[Callable[[], str], Callable[[str], None]] | None = None,
) -> TokenSet:
    """Run one browser login end to end and return the tokens (not yet saved).

    `paste` is (read one line, tell one sentence): pasted addresses race the callback.
    """
    attempt = LoginAttempt(cfg)
    await attempt.start()
    taker: asyncio.Task[None] | None = None
    try:
        announce(attempt.authorize_url)  # always: the machine may have no browser at all
        if paste is not None:
            taker = asyncio.create_task(
                _take_pasted(attempt, read_lines_in_background(paste[0]), paste[1]))
        if open_browser is not None:
            open_browser_in_background(open_browser, attempt.start_url)  # argv: no state
        return await attempt.wait()
    finally:
        if taker is not None:
            taker.cancel()
        await attempt.close()
