"""The sandbox's one route table: every endpoint, its methods and its scope, in order.

Order matters only for the catch-all `/v1/.*` (any other Qonic path: 401 or 404), which comes last.
"""

from __future__ import annotations

from qonic_proxy.sandbox import api_routes, control_routes, oauth_routes
from qonic_proxy.sandbox.routing import Route

ROUTES: tuple[Route, ...] = (
    *oauth_routes.ROUTES,
    *control_routes.ROUTES,
    *api_routes.ROUTES,
)
