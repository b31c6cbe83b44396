"""The loopback callback of one browser login (RFC 8252 section 7.3): listen, wait, exchange.

A `LoginAttempt` owns the PKCE pair and `state` of one login and listens exactly where
`[oauth] redirect_uri` says. Each connection is parsed by h11 (a real HTTP/1.1 parser) and checked
by `authorization_response`; exactly one valid redirect wins, everything else gets an error page
and the login keeps waiting, so a stray or hostile request cannot end the real login. Used by the
`login` verb, the daemon at start, and the daemon's /-/login endpoint.

The browser we start is not given the authorize URL (its argv is readable by every account, and
`state` with `code_challenge` would let another account race its own authorization to our
callback): it gets `start_url`, a per-login unguessable path on this same listener that answers
the account that runs us (and root) with a 302 to the authorize URL, and any other account
with a 403. Where peers cannot be identified (not Linux), the unguessable path is the guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import os
import secrets
import sys
from http import HTTPStatus
from typing import Any

import h11

from qonic_proxy.access.policy import Peer, Policy, connection_allowed
from qonic_proxy.config.model import Config
from qonic_proxy.errors import LoginError
from qonic_proxy.hosts import authority
from qonic_proxy.oauth import pages, pkce
from qonic_proxy.oauth.authorization_response import (
    AuthorizationResponse,
    BadRequest,
    parse_authorization_response,
)
from qonic_proxy.oauth.authorize import build_authorize_url
from qonic_proxy.oauth.client import exchange_code
from qonic_proxy.oauth.messages import clean, refusal_message
from qonic_proxy.oauth.paste import parse_pasted
from qonic_proxy.oauth.redirect import LoopbackRedirect, RedirectUriError, parse_loopback_redirect
from qonic_proxy.oauth.tokenset import TokenSet

LOGIN_FAILED_STATUS = 502  # the token endpoint failed us: a gateway error, not a success page
log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # request line + headers
READ_TIMEOUT = 10.0  # per connection: a silent socket (browser preconnect) must not pin us
MAX_CONNECTIONS = 32
WINNER_PAGE_TIMEOUT = 120.0  # how long the winning tab waits for the exchange's result
_READ_CHUNK = 64 * 1024
_REFUSED = Policy()  # remembers when a refused account was last logged (once a minute each)
START_PREFIX = "/-/start/"  # + a per-login random token: where the browser we start is sent


def may_start(peer: Peer) -> bool:
    """Whether `peer` may be sent on to the authorize URL: our own account or root only.

    An unidentified peer only where no peer can be identified at all (another OS); on Linux it
    is refused, as a peer that left or lives outside our user namespace.
    """
    if peer.uid is None:
        return not sys.platform.startswith("linux")
    return peer.uid in (os.getuid(), 0)


def _listen_at(cfg: Config) -> LoopbackRedirect:
    uri = cfg.oauth.redirect_uri
    try:
        return parse_loopback_redirect(uri)
    except RedirectUriError:
        raise LoginError(
            f"[oauth] redirect_uri {uri} cannot be received here; use an http://localhost:PORT/"
            "path (or 127.0.0.1 / [::1]) URI that is also registered with Qonic"
        ) from None


def _listen_error(exc: OSError, host: str, port: int, uri: str) -> LoginError:
    if exc.errno == errno.EADDRINUSE:
        return LoginError(
            f"port {port} for the login callback (redirect_uri {uri}) is in use; stop the program "
            "using it or change [oauth] redirect_uri (it must match the one registered with Qonic)"
        )
    if exc.errno == errno.EACCES:
        return LoginError(
            f"not allowed to listen on port {port} for the login callback (redirect_uri {uri}); "
            "use a port above 1023 in [oauth] redirect_uri (it must match the one registered with "
            "Qonic)"
        )
    return LoginError(
        f"cannot listen on {host} port {port} for the login callback "
        f"({clean(exc.strerror or str(exc), 80)}); check [oauth] redirect_uri"
    )


async def _read_request(reader: asyncio.StreamReader, conn: h11.Connection) -> h11.Request | None:
    """The request head, or None if the client closed first; h11.RemoteProtocolError if bad."""
    received = 0
    while True:
        try:
            event = conn.next_event()
        finally:
            # h11 bounds an incomplete head only; a complete one can arrive in a single read,
            # and being too large is the first thing wrong with it.
            if received - len(conn.trailing_data[0]) > MAX_HEAD:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        if isinstance(event, h11.Request):
            return event
        if event is not h11.NEED_DATA:
            return None
        data = await reader.read(_READ_CHUNK)
        if not data:
            return None  # a preconnect or a client that gave up
        received += len(data)
        conn.receive_data(data)


class LoginAttempt:
    """One browser login: PKCE pair, state, callback listener, code exchange."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._redirect = _listen_at(cfg)
        self._verifier = pkce.new_code_verifier()
        self._state = pkce.new_state()
        self.authorize_url = build_authorize_url(
            cfg, code_challenge=pkce.code_challenge_s256(self._verifier), state=self._state
        )
        self._start_path = START_PREFIX + secrets.token_urlsafe(24)
        self._servers: list[asyncio.AbstractServer] = []
        self._result: asyncio.Future[AuthorizationResponse] | None = None
        # the status and page the winning tab gets
        self._outcome: asyncio.Future[tuple[int, bytes]] | None = None
        self._winner: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"LoginAttempt(redirect_uri={self._cfg.oauth.redirect_uri!r})"

    @property
    def redirect_uri(self) -> str:
        return self._cfg.oauth.redirect_uri

    @property
    def start_url(self) -> str:
        """Where the browser we start is sent: no `state`, no `code_challenge` (see above)."""
        where = authority(self._redirect.host, self._redirect.port, "http")
        return f"http://{where}{self._start_path}"

    async def start(self) -> None:
        """Listen on exactly the redirect_uri's address and port."""
        if self._servers:
            raise RuntimeError("LoginAttempt.start() called twice")
        if self._closed:
            raise RuntimeError("LoginAttempt was closed")
        loop = asyncio.get_running_loop()
        self._result = loop.create_future()
        self._outcome = loop.create_future()
        where = self._redirect
        try:
            for host in where.listen_hosts + where.optional_listen_hosts:
                try:
                    server = await asyncio.start_server(self._handle, host=host, port=where.port)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE and host in where.optional_listen_hosts:
                        # No IPv6 loopback here (EADDRNOTAVAIL/EAFNOSUPPORT): 127.0.0.1 is enough.
                        log.debug("login callback not listening on %s: %s", host, exc)
                        continue
                    raise _listen_error(exc, host, where.port, self.redirect_uri) from None
                self._servers.append(server)
        except BaseException:
            await self.close()
            raise
        log.debug("login callback listening on port %d, path %s", where.port, where.path)

    async def wait(self, timeout: float | None = None) -> TokenSet:
        """Wait for the one valid callback, then exchange the code. Always closes the listener."""
        if timeout is None:
            timeout = self._cfg.oauth.login_timeout
        try:
            if self._result is None or self._outcome is None:
                raise RuntimeError("LoginAttempt.wait() needs start() first")
            try:
                result = await asyncio.wait_for(asyncio.shield(self._result), timeout)
            except TimeoutError:
                raise LoginError(
                    f"no login completed within {timeout:g} s; run `qonic-proxy login` to try again"
                ) from None
            if result.error is not None:
                raise LoginError(refusal_message(result.error, result.description))
            assert result.code is not None
            try:
                tokens = await asyncio.to_thread(
                    exchange_code, self._cfg, code=result.code, code_verifier=self._verifier
                )
            except Exception as exc:
                self._settle(pages.exchange_failed(exc), LOGIN_FAILED_STATUS)
                raise
            self._settle(pages.logged_in())
            log.info("logged in to Qonic (scopes: %s)", " ".join(tokens.scopes) or "none")
            return tokens
        finally:
            await self.close()

    def _settle(self, page: bytes, status: int = 200) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result((status, page))

    async def close(self) -> None:
        """Stop listening, let the winning tab get its page, drop every other connection."""
        if self._closed:
            return
        self._closed = True
        for server in self._servers:
            server.close()
        self._settle(pages.received())
        if self._winner is not None and not self._winner.done():
            await asyncio.wait({self._winner}, timeout=5)
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
        if self._result is not None and not self._result.done():
            self._result.set_exception(
                LoginError(
                    "the login was cancelled before it completed; run `qonic-proxy login` to "
                    "try again"
                )
            )
            self._result.exception()  # mark it retrieved: nobody may be waiting

    def submit(self, address: str) -> None:
        """Deliver a pasted address (see `oauth.paste`): same state check, same one winner.

        BadRequest (one sentence) when it is not this login's code; the login keeps waiting.
        """
        if self._result is None or self._result.done() or self._closed:
            raise LoginError("this login is already over; run `qonic-proxy login --paste` again")
        self._result.set_result(
            parse_pasted(address, path=self._redirect.path, state=self._state))

    # -- one connection -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        allowed, peer = connection_allowed(writer.get_extra_info("sockname"),
                                           writer.get_extra_info("peername"),
                                           self._cfg.access.users)
        if not allowed:  # another account: refused before its head is read, holding no slot
            if _REFUSED.should_log(peer):
                log.warning("login callback: refused a connection from the local account %s "
                            "([access] users)", peer.describe())
            writer.transport.abort()
            return
        if len(self._tasks) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve_one(reader, writer, peer)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         peer: Peer) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        answer = _Answer(writer, conn)
        malformed = False
        try:
            request = await asyncio.wait_for(_read_request(reader, conn), READ_TIMEOUT)
        except TimeoutError:
            await answer.send(408, pages.timed_out())
            return
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                await answer.send(431, pages.too_large())
                return
            request, malformed = None, True
        if request is None and not malformed:
            return  # a preconnect or a client that gave up
        if self._result is None or self._result.done() or self._closed:
            await answer.send(410, pages.finished())
            return
        if request is not None and self._is_start(request.target):
            await self._start(answer, request.method, peer)
            return
        try:
            if request is None or request.http_version not in (b"1.0", b"1.1"):
                raise BadRequest(400, "The request is not a valid HTTP/1.1 request")
            answer.head_only = request.method == b"HEAD"
            callback = parse_authorization_response(
                request.method.decode("ascii"),
                request.target.decode("ascii"),
                path=self._redirect.path,
                state=self._state,
            )
        except BadRequest as bad:
            log.debug("login callback: rejected a request (%d: %s)", bad.status, bad)
            allow = (("Allow", "GET"),) if bad.status == 405 else ()
            await answer.send(bad.status, pages.not_a_callback(str(bad)), allow)
            return
        # This connection won: close() lets it finish writing its page before dropping others.
        self._winner = asyncio.current_task()
        self._result.set_result(callback)
        if callback.error is not None:
            log.debug("login callback: Qonic sent an error")
            await answer.send(200, pages.refused(callback.error, callback.description))
            return
        log.debug("login callback: received an authorization code")
        assert self._outcome is not None
        try:
            status, page = await asyncio.wait_for(asyncio.shield(self._outcome),
                                                  WINNER_PAGE_TIMEOUT)
        except TimeoutError:
            status, page = 200, pages.received()
        await answer.send(status, page)

    def _is_start(self, target: bytes) -> bool:
        path = target.split(b"?", 1)[0]
        return hmac.compare_digest(path, self._start_path.encode("ascii"))

    async def _start(self, answer: _Answer, method: bytes, peer: Peer) -> None:
        """The browser we started: on to the authorize URL, if it runs as our account."""
        answer.head_only = method == b"HEAD"
        if method not in (b"GET", b"HEAD"):
            await answer.send(405, pages.not_a_callback("Only GET starts a login"),
                              (("Allow", "GET"),))
        elif not may_start(peer):
            if _REFUSED.should_log(peer):
                log.warning("login start page: refused the local account %s (only the account "
                            "that started the login may)", peer.describe())
            await answer.send(403, pages.start_refused())
        else:
            await answer.send(302, pages.start(), (("Location", self.authorize_url),))


class _Answer:
    """The one response a connection gets, written through h11 (reason phrase from HTTPStatus)."""

    def __init__(self, writer: asyncio.StreamWriter, conn: h11.Connection) -> None:
        self._writer = writer
        self._conn = conn
        self.head_only = False  # a HEAD request: headers only

    async def send(
        self, status: int, body: bytes, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        headers = [*pages.PAGE_HEADERS, *extra, ("Content-Length", str(len(body)))]
        reason = HTTPStatus(status).phrase.encode("ascii")
        conn = self._conn
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
        if not self.head_only:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        self._writer.write(data)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(self._writer.drain(), READ_TIMEOUT)
