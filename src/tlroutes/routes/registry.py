"""The route registry: route name → the module that implements it (in the manner of timm).

The runner, the planner, the report and ``tlroutes routes --explain`` find a route here and
call what its module provides; nothing else names a route. The eight built-in routes are
registered by name and imported on first use (they import torch), so ``import tlroutes`` stays
fast.

**The route protocol.** A route is a module with these module-level names:

=====================  ==================================================================
``ROUTE``              the :class:`~tlroutes.matrix.Route`: the cube cell it sits in
``Recipe``             its ``recipe:`` block, a :class:`~tlroutes.routes.common.RecipeSpec`
                       subclass with every field documented
``run``                ``run(spec, recipe, trainer) -> Summary``: train and test; returns a
                       :class:`~tlroutes.summary.Summary` (build it with
                       :func:`~tlroutes.routes.common.summarise`)
``report_blocks``      ``report_blocks(run, *, tsne) -> list[Block]``: the report's
                       ``route-details`` section from a :class:`~tlroutes.reporting.collect.RunData`
``recommend``          ``recommend(problems, evidence, warnings) -> (recipe, reasons)``: the
                       planner's advice for the ``recipe:`` block (see :data:`Advice`)
``PROSE``              a :class:`RouteProse`: what the route does, an example project, and
                       what two problems share by part (a :class:`Sharing`)
=====================  ==================================================================

``recommend``'s arguments: ``problems``, the run's problems by name (the last is the target);
``evidence``, the measurements (a :class:`~tlroutes.measure.evidence.Evidence`, or None when
nothing was measured); ``warnings``, the plan's cautions, which it may append to. It returns
``(recipe, reasons)``: recommended ``recipe:`` settings and one sentence per key.
``report_blocks``'s ``tsne`` asks for t-SNE maps beside PCA where the route draws feature maps
(default True); other routes ignore it.

Every built-in route has all six (a test checks). A plug-in must have the first four; the
advice and the prose (the last two) it may leave out, and then borrows those of the built-in
route of its cell: the planner and ``tlroutes routes --explain`` speak of cells, so they only
ever ask the built-in routes.

Optional: ``RUN_FILE_BLOCKS`` (a ``frozenset`` of the run file's top-level blocks the route reads
besides those every run reads — route, order, constraints, seed, seeds, recipe, hardware,
tracking; the runner refuses a run file that sets any other, naming the route; a plug-in that
leaves it out is not checked), ``REPORT_FILES`` (``{file: why it matters}``, files relative to
the first seed's folder that a finished run holds and the report reads, e.g.
``{"features.npz": ...}``; the report lists any that are missing), ``REFUSED_PRECISIONS``
(``{hardware.precision: why, and what to use instead}``, refused before anything trains) and
``TITLE`` (the display name, default ``ROUTE.title``).

A plug-in route is one module plus one registration::

    from tlroutes.routes import register_route
    register_route("my_fine_tuning", "my_package.my_fine_tuning")   # or the module itself

after which ``route: my_fine_tuning`` works in a run file, in :func:`tlroutes.run` and in the
report. A plug-in sits in one of the eight cells (its ``ROUTE``): the cube is complete, so a new
route is a new recipe for a cell.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tlroutes.errors import ConfigError, did_you_mean, shorten
from tlroutes.matrix import Route

#: Module attributes every route must have.
REQUIRED: tuple[str, ...] = ("ROUTE", "Recipe", "run", "report_blocks")
#: Module attributes of the protocol a plug-in may leave to the built-in route of its cell.
OPTIONAL_FOR_PLUG_INS: tuple[str, ...] = ("recommend", "PROSE")

#: What ``recommend`` returns: recommended ``recipe:`` settings, and one sentence per key.
Advice = tuple[dict[str, Any], dict[str, str]]


@dataclass(frozen=True)
class Sharing:
    """What the two problems of a route have in common, part by part (the report's table)."""

    stems: str
    """The input stems: carried over, new, one per domain, shared …"""
    trunk: str
    """The trunk: carried over (frozen, tuned, aligned), shared or separate."""
    heads: str
    """The output heads: new, carried over, one per task, shared or separate."""
    stages: str
    """The training stages: one after the other (source → target), joint or concurrent."""

    PARTS = ("stems", "trunk", "heads", "stages")

    def rows(self) -> list[tuple[str, str]]:
        """``(part, words)`` for each part, in the order stems, trunk, heads, stages."""
        return [(part, getattr(self, part)) for part in self.PARTS]


@dataclass(frozen=True)
class RouteProse:
    """What ``tlroutes routes --explain``, the report and the plan say about a route."""

    explanation: str
    """What the route does, in one or two sentences."""
    example: str
    """A one-line example of a project on this route."""
    sharing: Sharing
    """What the two problems have in common, by part."""


def prose_of(module: ModuleType) -> RouteProse:
    """A route module's :class:`RouteProse`, or, for a plug-in without one, its cell's."""
    prose = getattr(module, "PROSE", None)
    return prose if prose is not None else get_route(module.ROUTE).PROSE

# name → the module, or its dotted path until first use (lazy import).
_ROUTES: dict[str, ModuleType | str] = {
    route.value: f"tlroutes.routes.{route.value}" for route in Route
}


def register_route(name: str, module: ModuleType | str, *, replace: bool = False) -> None:
    """Register the route module ``module`` under ``name``.

    Args:
        name: the name run files use (``route: NAME``); letters, digits and ``_``.
        module: the module, or its dotted import path (imported, and checked against the
            protocol, on first use).
        replace: allow replacing a route already registered under ``name``. Default False.

    Raises:
        ConfigError: ``name`` is taken (and ``replace`` is False) or is not an identifier, or
            a module given as an object lacks part of the protocol.
    """
    if not name.isidentifier():
        raise ConfigError(f"A route name must be letters, digits and '_'; got {name!r}.")
    known = _ROUTES.get(name)
    if known is not None and not replace and _path(known) != _path(module):
        raise ConfigError(f"A route named '{name}' is already registered ({_path(known)}); pick "
                          "another name, or pass replace=True.")
    if isinstance(module, ModuleType):
        check_route(module, name)
    _ROUTES[name] = module


def unregister_route(name: str) -> None:
    """Remove a plug-in route (a built-in one cannot be removed).

    Raises:
        ConfigError: ``name`` is a built-in route or is not registered.
    """
    if name in {r.value for r in Route}:
        raise ConfigError(f"'{name}' is a built-in route; it cannot be unregistered.")
    if _ROUTES.pop(name, None) is None:
        raise ConfigError(f"No route named '{name}' is registered.")


def list_routes() -> list[str]:
    """The registered route names: the eight built-in ones in cube order, then plug-ins."""
    return list(_ROUTES)


def route_name(name_or_route: str | Route) -> str:
    """The registered name for a route, a name, or a title (``"Task Fine-Tuning"``).

    Raises:
        ConfigError: nothing registered matches (the message suggests the nearest name).
    """
    if isinstance(name_or_route, Route):
        return name_or_route.value
    text = str(name_or_route).strip()
    if text in _ROUTES:
        return text
    try:
        return Route.parse(text).value
    except ConfigError:
        raise ConfigError(
            f"Unknown route {shorten(text, quote=True)}.{did_you_mean(text, _ROUTES)} Registered "
            f"routes: {', '.join(_ROUTES)} (or their titles, e.g. 'Task Fine-Tuning')."
        ) from None


def get_route(name_or_route: str | Route) -> ModuleType:
    """The module of a route, imported on first use and checked against the protocol.

    Args:
        name_or_route: a registered name (``"task_fine_tuning"``), a title
            (``"Task Fine-Tuning"``) or a :class:`Route`.

    Raises:
        ConfigError: unknown route, or its module lacks part of the protocol.
    """
    name = route_name(name_or_route)
    module = _ROUTES[name]
    if isinstance(module, str):
        module = importlib.import_module(module)
        check_route(module, name)
        _ROUTES[name] = module
    return module


def check_route(module: ModuleType, name: str) -> None:
    """Raise :class:`ConfigError` unless ``module`` follows the route protocol (see above)."""
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise ConfigError(
            f"Route '{name}' ({module.__name__}) lacks {', '.join(missing)}. A route module "
            f"defines {', '.join(REQUIRED + OPTIONAL_FOR_PLUG_INS)} (see "
            "tlroutes.routes.registry).")
    if not isinstance(module.ROUTE, Route):
        raise ConfigError(f"Route '{name}': ROUTE must be a tlroutes.matrix.Route (its cube "
                          f"cell), not {module.ROUTE!r}.")
    # Imported here: common.py pulls in torch, which registering a path must not.
    from tlroutes.routes.common import RecipeSpec

    if not (isinstance(module.Recipe, type) and issubclass(module.Recipe, RecipeSpec)):
        raise ConfigError(f"Route '{name}': Recipe must be a subclass of "
                          "tlroutes.routes.common.RecipeSpec.")
    for attr in ("run", "report_blocks", "recommend"):
        if hasattr(module, attr) and not callable(getattr(module, attr)):
            raise ConfigError(f"Route '{name}': {attr} must be a function.")
    if getattr(module, "PROSE", None) is not None and not isinstance(module.PROSE, RouteProse):
        raise ConfigError(f"Route '{name}': PROSE must be a tlroutes.routes.registry.RouteProse, "
                          f"not {type(module.PROSE).__name__}.")


def title_of(module: ModuleType) -> str:
    """A route module's display name: its ``TITLE`` or its cube cell's title."""
    return getattr(module, "TITLE", None) or module.ROUTE.title


def _path(module: ModuleType | str) -> str:
    return module if isinstance(module, str) else module.__name__
