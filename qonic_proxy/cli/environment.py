"""The program's surroundings (streams, browser opener) in one object that tests can swap.

Verbs write through it instead of reaching for `sys.stdout`, so a unit test can run a verb
in-process and read what it printed without patching globals.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import TextIO


def _stdout() -> TextIO:
    return sys.stdout  # looked up when the Environment is made (pytest swaps sys.stdout)


def _stderr() -> TextIO:
    return sys.stderr


def open_in_browser(url: str) -> bool:
    """`webbrowser.open`, imported when a browser is really wanted (it costs ~10 ms at start)."""
    import webbrowser

    return webbrowser.open(url)


@dataclasses.dataclass
class Environment:
    stdout: TextIO = dataclasses.field(default_factory=_stdout)
    stderr: TextIO = dataclasses.field(default_factory=_stderr)
    open_browser: Callable[[str], object] = open_in_browser

    def print(self, text: str) -> None:
        """One line (or block) of a verb's result, on stdout."""
        print(text, file=self.stdout)

    def error(self, message: str) -> None:
        """The one sentence a failure ends in, on stderr, prefixed with the program's name."""
        print(f"qonic-proxy: {message}", file=self.stderr)
