"""The program's surroundings (streams, browser opener) in one object that tests can swap.

Verbs write through it instead of reaching for `sys.stdout`, so a unit test can run a verb
in-process and read what it printed without patching globals.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from qonic_proxy.records import field, record


def open_without_secrets(url: str) -> bool:
    """`oauth.browser.open_without_secrets`, imported only when a browser is opened (it
    brings subprocess and the browser rules, which no other verb needs)."""
    from qonic_proxy.oauth import browser

    return browser.open_without_secrets(url)


def _stdout() -> TextIO:
    return sys.stdout  # looked up when the Environment is made (pytest swaps sys.stdout)


def _stderr() -> TextIO:
    return sys.stderr


@record(frozen=False)
class Environment:
    stdout: TextIO = field(default_factory=_stdout)
    stderr: TextIO = field(default_factory=_stderr)
    open_browser: Callable[[str], object] = open_without_secrets

    def print(self, text: str) -> None:
        """One line (or block) of a verb's result, on stdout."""
        print(text, file=self.stdout)

    def error(self, message: str) -> None:
        """The one sentence a failure ends in, on stderr, prefixed with the program's name."""
        print(f"qonic-proxy: {message}", file=self.stderr)
