"""The browser is started with an environment that holds no secret of ours.

Python's `webbrowser` (DESIGN.md: so `$BROWSER` is honoured) starts the browser with this
process's own environment, which may hold `$QONIC_CLIENT_SECRET` and, inside `qonic-proxy exec`,
proxy URLs carrying a client key. `open_without_secrets` therefore runs `webbrowser.open` in a
short-lived child of its own whose environment is `browser_environment()`: the same, minus those.
The child's argv holds only the URL it is given, which is the login's start URL on our loopback
callback (see `oauth.callback`), never `state` or `code_challenge`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping

from qonic_proxy.config.model import ENV_SECRET

SECRET_VARIABLES = (ENV_SECRET,)
# user info in a URL that points at a loopback listener: a client key of this (or a private) proxy
_LOCAL_KEY = re.compile(r"://[^/@\s]*:[^/@\s]*@(localhost|127\.[0-9.]+|\[::1\])([:/]|$)", re.I)
_OPEN = ("import sys, webbrowser\n"
         "sys.exit(0 if webbrowser.open(sys.argv[1]) else 3)\n")
NO_BROWSER = 3  # the child's exit status when webbrowser found no browser here


def browser_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: ours) without the client secret and without local proxy keys."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items()
            if name not in SECRET_VARIABLES and not _LOCAL_KEY.search(value)}


def open_without_secrets(url: str) -> bool:
    """`webbrowser.open(url)` in a child with `browser_environment()`; False: no browser here.

    Blocks as long as webbrowser does (a `$BROWSER` command that waits): call it off the loop.
    """
    done = subprocess.run([sys.executable, "-I", "-c", _OPEN, url], env=browser_environment(),
                          stdin=subprocess.DEVNULL, check=False)
    return done.returncode == 0
