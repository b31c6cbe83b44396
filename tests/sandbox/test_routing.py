"""Route lookup on a fake exchange: the first matching pattern decides, then the method."""

from __future__ import annotations

import re
from typing import Any

from qonic_proxy.sandbox.grants import Grants
from qonic_proxy.sandbox.routes import ROUTES
from qonic_proxy.sandbox.routing import Context, Route, dispatch, route
from qonic_proxy.sandbox.settings import SandboxSettings


class FakeExchange:
    def __init__(self, method: str, path: str) -> None:
        self.method, self.path = method, path
        self.answer: tuple[Any, ...] | None = None

    def not_found(self) -> None:
        self.answer = (404,)

    def method_not_allowed(self, allowed: str) -> None:
        self.answer = (405, allowed)


CTX = Context(SandboxSettings(), Grants(SandboxSettings()))


def run(table: tuple[Route, ...], method: str, path: str) -> FakeExchange:
    ex = FakeExchange(method, path)
    dispatch(table, CTX, ex)  # type: ignore[arg-type]
    return ex


def handler(name: str):  # type: ignore[no-untyped-def]
    def handle(ctx: Context, ex: Any, m: re.Match[str]) -> None:
        ex.answer = (200, name, m.groupdict())

    return handle


TABLE = (
    route("GET", r"/items/(?P<id>[^/]+)", handler("get")),
    route("PUT DELETE", r"/items/(?P<id>[^/]+)", handler("change")),
    route("", r"/.*", handler("any")),
)


def test_method_picks_among_the_entries_of_the_first_matching_pattern() -> None:
    assert run(TABLE, "GET", "/items/7").answer == (200, "get", {"id": "7"})
    assert run(TABLE, "DELETE", "/items/7").answer == (200, "change", {"id": "7"})


def test_a_method_no_entry_takes_is_405_not_the_catch_all() -> None:
    assert run(TABLE, "POST", "/items/7").answer == (405, "GET, PUT, DELETE")


def test_the_catch_all_takes_any_other_path_and_no_match_is_404() -> None:
    assert run(TABLE, "POST", "/other").answer == (200, "any", {})
    assert run(TABLE[:2], "GET", "/other").answer == (404,)


def test_a_guard_answers_before_the_method_check() -> None:
    def deny(ctx: Context, ex: Any, chosen: Route) -> bool:
        ex.answer = (401, chosen.scope)
        return False

    table = (route("GET", r"/x", handler("x"), scope="s", guard=deny),)
    assert run(table, "POST", "/x").answer == (401, "s")


def test_the_sandbox_table() -> None:
    assert run(ROUTES, "GET", "/nowhere").answer == (404,)
    assert run(ROUTES, "GET", "/v1/auth/token").answer == (405, "POST")
    paths = [r.pattern.pattern for r in ROUTES]
    assert paths[-1] == r"/v1/.*"  # the API catch-all comes last
    assert all(r.guard is not None for r in ROUTES if r.pattern.pattern.startswith("/v1/p"))
