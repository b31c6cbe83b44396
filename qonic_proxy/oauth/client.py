"""The token client: the two token requests this project makes, each builder → transport → parser.

Blocking (one `http.client` POST) so it stays simple and auditable; async callers run it with
`asyncio.to_thread`. Nothing secret (code, verifier, client secret, tokens) is ever put into a
log record, an exception message or a repr.
"""

from __future__ import annotations

import logging
import time

from qonic_proxy.config.model import Config
from qonic_proxy.hosts import display_url
from qonic_proxy.oauth.token_request import (
    MAX_TOKEN_RESPONSE,
    TokenRequest,
    parse_token_response,
    prepare_code_exchange,
    prepare_refresh,
)
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.oauth.transport import post_form
from qonic_proxy.records import replace

log = logging.getLogger(__name__)


def _send(
    cfg: Config,
    request: TokenRequest,
    *,
    grant: str,
    timeout: float,
    redact: tuple[str | None, ...],
) -> TokenSet:
    """POST one prepared request and parse the answer."""
    shown = display_url(request.url)
    log.debug("token request: POST %s (grant_type=%s)", shown, grant)
    answer = post_form(
        request.url,
        request.headers,
        request.body,
        ca_file=cfg.qonic.ca_file,
        timeout=timeout,
        limit=MAX_TOKEN_RESPONSE,
        via=cfg.qonic.upstream_proxy,
    )
    log.debug("token endpoint answered HTTP %d (%d bytes)", answer.status, len(answer.body))
    return parse_token_response(
        answer.status,
        answer.content_type,
        answer.body,
        requested_scopes=cfg.oauth.scopes,
        now=time.time(),
        endpoint=shown,
        redact=redact,
        retry_after=answer.retry_after,
    )


def exchange_code(cfg: Config, *, code: str, code_verifier: str, timeout: float = 30) -> TokenSet:
    """Trade an authorization code for tokens (blocking; async callers use asyncio.to_thread)."""
    request = prepare_code_exchange(cfg, code=code, code_verifier=code_verifier)
    redact = (code, code_verifier, cfg.oauth.client_secret)
    return _send(cfg, request, grant="authorization_code", timeout=timeout, redact=redact)


def refresh_tokens(cfg: Config, refresh_token: str, *, timeout: float = 30) -> TokenSet:
    """Use the refresh token; servers that do not rotate it leave us the old one."""
    request = prepare_refresh(cfg, refresh_token)
    redact = (refresh_token, cfg.oauth.client_secret)
    tokens = _send(cfg, request, grant="refresh_token", timeout=timeout, redact=redact)
    if tokens.refresh_token is None:
        tokens = replace(tokens, refresh_token=refresh_token)
    return tokens
