"""Route recipes: one short file per route, each a ``run(spec, trainer) -> summary`` function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tlroutes.errors import ConfigError
from tlroutes.matrix import Route

Recipe = Callable[..., dict[str, Any]]


def recipe_for(route: Route) -> Recipe:
    """The recipe that runs ``route``; a clear error for a route that has none yet."""
    from tlroutes.routes import task_fine_tuning

    recipes: dict[Route, Recipe] = {Route.TASK_FINE_TUNING: task_fine_tuning.run}
    if route not in recipes:
        have = ", ".join(r.value for r in recipes)
        raise ConfigError(
            f"The {route.title} route has no recipe in this version of tlroutes yet; routes "
            f"you can run now: {have}. `tlroutes routes` shows where each sits on the cube."
        )
    return recipes[route]
