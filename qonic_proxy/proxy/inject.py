"""Where the token is added: `Authorization: Bearer` on a request routed to the API origin."""

from __future__ import annotations

from mitmproxy import http

from qonic_proxy.hosts import Origin
from qonic_proxy.proxy.flow_state import flow_state
from qonic_proxy.proxy.responses import login_required, token_endpoint_unavailable
from qonic_proxy.tokens.outage import whole_seconds
from qonic_proxy.tokens.service import TokenService


async def add_token(flow: http.HTTPFlow, tokens: TokenService, api_origin: Origin,
                    ) -> tuple[http.Response, str] | None:
    """Add the bearer token (replacing the client's Authorization); without one, return the
    answer the client should get instead and its reason (see `answer_without_token`)."""
    request = flow.request
    # The API gets its own authority as Host, whatever the client sent: on the reverse listener
    # keep_host_header lets the guard see the client's Host, and inside a forward-mode tunnel
    # the client's Host would otherwise go on as it came.
    request.host_header = api_origin.authority
    token = await tokens.get_access_token()
    if token is None:
        return answer_without_token(tokens)
    request.headers["Authorization"] = f"Bearer {token}"
    flow_state(flow).token = token
    return None


def answer_without_token(tokens: TokenService) -> tuple[http.Response, str]:
    """503 while the token endpoint is down (the login is kept and nothing is offered), else
    401 with a login offered. Used for new requests and after a 401 that refreshing could not
    cure, so both say the same."""
    outage = tokens.unavailable()
    if outage is not None:
        answer = token_endpoint_unavailable(outage.headline(),
                                            whole_seconds(tokens.next_attempt_in()))
        return answer, "token_endpoint_unavailable"
    if not tokens.login_pending:
        tokens.offer_login()
    return login_required(tokens.what_to_do()), "login_required"
