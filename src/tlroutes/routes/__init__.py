"""Route recipes: one short file per route, found through the route registry.

Each route module follows the route protocol (``ROUTE``, ``Recipe``, ``run``, ``report_blocks``,
``recommend``, ``PROSE``; see :mod:`tlroutes.routes.registry`).
The runner, planner and report dispatch through :func:`get_route`; a plug-in route is one module
plus one :func:`register_route` call.
"""

from __future__ import annotations

from types import ModuleType

from tlroutes.matrix import Route
from tlroutes.routes.registry import (
    get_route,
    list_routes,
    register_route,
    route_name,
    unregister_route,
)

__all__ = ["get_route", "list_routes", "recipe_for", "register_route", "route_name",
           "unregister_route"]


def recipe_for(route: Route | str) -> ModuleType:
    """The module that runs ``route`` (the same as :func:`get_route`, its older name)."""
    return get_route(route)
