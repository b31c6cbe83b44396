"""The route table's shape: method + path pattern -> handler, and how a request finds one.

Why: one table makes every endpoint, its methods and its scope readable in one place; the HTTP
handler only looks the route up. The first pattern that matches the path decides; among that
pattern's entries the method decides; none of them takes the method -> 405.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qonic_proxy.sandbox.exchange import Exchange
from qonic_proxy.sandbox.faults import Faults
from qonic_proxy.sandbox.grants import Grants
from qonic_proxy.sandbox.settings import SandboxSettings


@dataclass
class Context:
    """What handlers may use: the settings, the grant state, the fault switches, the own URL."""

    settings: SandboxSettings
    grants: Grants
    url: str = ""
    faults: Faults = field(default_factory=Faults)


Handler = Callable[[Context, Exchange, "re.Match[str]"], None]
# A guard answers the request itself and returns False to stop it (e.g. a missing bearer).
Guard = Callable[[Context, Exchange, "Route"], bool]


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]  # () = any method
    pattern: re.Pattern[str]
    handler: Handler
    scope: str | None = None  # the bearer token must carry it (checked by the guard)
    guard: Guard | None = field(default=None, compare=False)

    def allows(self, method: str) -> bool:
        return not self.methods or method in self.methods


def route(
    methods: str, pattern: str, handler: Handler, *, scope: str | None = None,
    guard: Guard | None = None,
) -> Route:
    """A table entry: `methods` space-separated ("" = any), `pattern` a full-match regex."""
    return Route(tuple(methods.split()), re.compile(pattern), handler, scope, guard)


def dispatch(table: Sequence[Route], ctx: Context, ex: Exchange) -> None:
    """Find the route for `ex` and run it (guard, then method check, then handler)."""
    first: tuple[Route, re.Match[str]] | None = None
    for entry in table:
        match = entry.pattern.fullmatch(ex.path)
        if match is None or (first is not None and entry.pattern != first[0].pattern):
            continue
        if first is None:
            first = (entry, match)
        if entry.allows(ex.method):
            first = (entry, match)
            break
    if first is None:
        return ex.not_found()
    chosen, match = first
    if chosen.guard is not None and not chosen.guard(ctx, ex, chosen):
        return None
    if not chosen.allows(ex.method):
        allowed = [m for e in table if e.pattern == chosen.pattern for m in e.methods]
        return ex.method_not_allowed(", ".join(allowed))
    chosen.handler(ctx, ex, match)
    return None
