"""The daemon's pending login takes a pasted address (`qonic-proxy login --paste`).

The daemon holds the verifier, so the CLI hands it the address over `/-/login/paste`; the
address goes through the same checks as a callback (`LoginAttempt.submit`), and the answer
waits for the exchange and the save, so the daemon serves the moment it says 200.
"""

from __future__ import annotations

import asyncio

from qonic_proxy.errors import LoginError
from qonic_proxy.oauth.authorization_response import BadRequest
from qonic_proxy.tokens.service import TokenService

NO_LOGIN = "No login is pending; run `qonic-proxy login --paste` to start one."


async def paste_into(service: TokenService, address: str) -> tuple[int, str]:
    """(200 logged in | 400 not this login's code | 409 no login pending | 502, one sentence)."""
    pending = service.pending_login
    if pending is None:
        return 409, NO_LOGIN
    attempt, task = pending
    try:
        attempt.submit(address)
    except BadRequest as bad:
        return 400, str(bad)
    except LoginError:
        return 409, NO_LOGIN  # the callback won a moment ago
    await asyncio.wait({task})  # the exchange and the save; bounded by the token client's timeout
    if service.is_usable():
        return 200, "Logged in to Qonic."
    return 502, service.last_login_error or "The login failed; see the qonic-proxy log."
