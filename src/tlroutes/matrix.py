"""The cube: three yes/no questions place a transfer-learning project on one of eight routes.

A project has two problems (a source and a target, or two problems learned at once). Three axes
place it in a 2×2×2 cube:

- **task**: is the second problem the same *kind* of task (``"same"``) or another (``"different"``)?
- **domain**: does its data come from the same distribution and modality (``"same"``) or not
  (``"different"``)?
- **order**: is knowledge carried over one problem after the other (``"sequential"``) or are both
  learned at once (``"simultaneous"``)?

============  ================  =================  ===================  =================
order         same task,        same task,         different task,      different task,
              same domain       different domain   same domain          different domain
============  ================  =================  ===================  =================
sequential    Task Fine-Tuning  Domain Adaptation  Task Adaptation      Modality Transfer
simultaneous  Dataset Merging   Weight Sharing     Multi-Task Learning  Parallel Training
============  ================  =================  ===================  =================

This module holds only the cube: the axis values, the :class:`Route` enum (each route's id, title
and cell) and :func:`route_for` (axes → route). It is the bottom layer and imports no route: each
route's prose and advice live in its module ``tlroutes.routes.<id>``, the cube's picture in
:mod:`tlroutes.cube_picture`, and the terminal tables in :mod:`tlroutes.routes.explain`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Literal

from tlroutes.errors import ConfigError, did_you_mean, shorten

__all__ = [
    "AXES",
    "COLUMNS",
    "DIFFERENT",
    "IMPORTANCES",
    "ORDERS",
    "RELATIONS",
    "SAME",
    "SEQUENTIAL",
    "SIMULTANEOUS",
    "Order",
    "Relation",
    "Route",
    "importance_text",
    "route_for",
]

# --------------------------------------------------------------------------------------------------
# Axis values
# --------------------------------------------------------------------------------------------------

Relation = Literal["same", "different"]
"""Value of the task and domain axes."""
Order = Literal["sequential", "simultaneous"]
"""Value of the order axis."""

SAME: Relation = "same"
DIFFERENT: Relation = "different"
SEQUENTIAL: Order = "sequential"
SIMULTANEOUS: Order = "simultaneous"

RELATIONS: tuple[str, ...] = (SAME, DIFFERENT)
ORDERS: tuple[str, ...] = (SEQUENTIAL, SIMULTANEOUS)
AXES: dict[str, tuple[str, ...]] = {"task": RELATIONS, "domain": RELATIONS, "order": ORDERS}
"""Each axis name with its valid values."""

COLUMNS: tuple[tuple[str, str], ...] = (
    (SAME, SAME),
    (SAME, DIFFERENT),
    (DIFFERENT, SAME),
    (DIFFERENT, DIFFERENT),
)
"""The cube's columns as ``(task, domain)`` pairs, in the order tables and pictures use."""

IMPORTANCES: tuple[str, ...] = ("equal", "main and auxiliary")
"""The fourth axis, **importance**: are the tasks equally important (classic multi-task
learning), or is one the main task and the others auxiliary, there only to help it? It does not
move a project to another cell; it changes what a simultaneous route selects on, reports and
compares with (the main task's metric against the main task trained alone). A run file sets it
with ``importance: {<problem>: main}``. In a sequential route it is implicit: the target is the
main task and the source serves it."""


def importance_text(importance: Mapping[str, str] | None) -> str:
    """The importance axis in words: ``"equal"``, or ``"main: digit; auxiliary: parity, gt4"``.

    Args:
        importance: a run file's ``importance:`` (problem → ``main`` | ``auxiliary``), or the
            full mapping with every problem; None or empty means equal.
    """
    if not importance:
        return IMPORTANCES[0]
    main = [n for n, v in importance.items() if v == "main"]
    aux = [n for n, v in importance.items() if v != "main"]
    return f"main: {', '.join(main)}" + (f"; auxiliary: {', '.join(aux)}" if aux else "")


# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------

_CELLS: dict[str, tuple[str, tuple[Relation, Relation, Order]]] = {
    "task_fine_tuning": ("Task Fine-Tuning", (SAME, SAME, SEQUENTIAL)),
    "domain_adaptation": ("Domain Adaptation", (SAME, DIFFERENT, SEQUENTIAL)),
    "task_adaptation": ("Task Adaptation", (DIFFERENT, SAME, SEQUENTIAL)),
    "modality_transfer": ("Modality Transfer", (DIFFERENT, DIFFERENT, SEQUENTIAL)),
    "dataset_merging": ("Dataset Merging", (SAME, SAME, SIMULTANEOUS)),
    "weight_sharing": ("Weight Sharing", (SAME, DIFFERENT, SIMULTANEOUS)),
    "multi_task_learning": ("Multi-Task Learning", (DIFFERENT, SAME, SIMULTANEOUS)),
    "parallel_training": ("Parallel Training", (DIFFERENT, DIFFERENT, SIMULTANEOUS)),
}
"""Each route id with its title and its ``(task, domain, order)`` cell. The routes' prose
(explanation, example, sharing pattern) lives in their own modules, ``tlroutes.routes.<id>``."""


def _squash(text: str) -> str:
    """Lower-case ``text`` and drop spaces, hyphens and underscores (for name matching)."""
    return re.sub(r"[\s_\-]+", "", text.strip().lower())


def _snake(text: str) -> str:
    """Lower-case ``text`` and turn runs of spaces/hyphens/underscores into one underscore."""
    return re.sub(r"[\s_\-]+", "_", text.strip().lower()).strip("_")


class Route(str, Enum):
    """One of the eight transfer-learning routes (a cell of the cube).

    The value is a snake_case id (``"task_adaptation"``); ``str(route)`` and ``format(route)``
    give the title (``"Task Adaptation"``). Use :meth:`parse` to turn user text into a route and
    :func:`route_for` to find the route for three axis values.
    """

    TASK_FINE_TUNING = "task_fine_tuning"
    DOMAIN_ADAPTATION = "domain_adaptation"
    TASK_ADAPTATION = "task_adaptation"
    MODALITY_TRANSFER = "modality_transfer"
    DATASET_MERGING = "dataset_merging"
    WEIGHT_SHARING = "weight_sharing"
    MULTI_TASK_LEARNING = "multi_task_learning"
    PARALLEL_TRAINING = "parallel_training"

    # -- metadata ----------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The snake_case id, e.g. ``"task_adaptation"`` (same as ``.value``)."""
        return self.value

    @property
    def title(self) -> str:  # type: ignore[override]  # shadows str.title on purpose
        """The display name, e.g. ``"Task Adaptation"``."""
        return _CELLS[self.value][0]

    @property
    def task(self) -> Relation:
        """Task axis: ``"same"`` or ``"different"``."""
        return _CELLS[self.value][1][0]

    @property
    def domain(self) -> Relation:
        """Domain axis: ``"same"`` or ``"different"``."""
        return _CELLS[self.value][1][1]

    @property
    def order(self) -> Order:
        """Order axis: ``"sequential"`` or ``"simultaneous"``."""
        return _CELLS[self.value][1][2]

    @property
    def sequential(self) -> bool:
        """True for the four sequential routes (a chain of stages)."""
        return self.order == SEQUENTIAL

    # -- printing ----------------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.title

    def __format__(self, format_spec: str) -> str:
        return format(self.title, format_spec)

    def __repr__(self) -> str:
        return f"Route.{self.name}"

    # -- parsing -----------------------------------------------------------------------------------

    @classmethod
    def parse(cls, name: str | Route) -> Route:
        """Turn a route name into a :class:`Route`.

        Args:
            name: a :class:`Route`, its id (``"task_adaptation"``), its title
                (``"Task Adaptation"``) or its member name (``"TASK_ADAPTATION"``), in any case,
                with spaces, hyphens or underscores between the words (``"task-adaptation"``).

        Returns:
            The matching route.

        Raises:
            ConfigError: when ``name`` matches no route; the message lists the eight valid names
                and suggests the nearest one.
        """
        if isinstance(name, Route):
            return name
        if isinstance(name, str):
            key = _squash(name)
            for route in cls:
                if key == _squash(route.value):
                    return route
        valid = ", ".join(f"'{route.value}'" for route in cls)
        hint = (
            did_you_mean(_snake(name), [route.value for route in cls])
            if isinstance(name, str)
            else ""
        )
        raise ConfigError(
            f"Unknown route {shorten(name, quote=True)}. Valid routes are: {valid} "
            f"(titles such as 'Task Adaptation' and any case work too).{hint}"
        )


# --------------------------------------------------------------------------------------------------
# Axes -> route
# --------------------------------------------------------------------------------------------------

_BY_AXES: dict[tuple[str, str, str], Route] = {
    (route.task, route.domain, route.order): route for route in Route
}


def _axis_value(axis: str, value: str) -> str:
    """Normalise one axis value or raise :class:`ConfigError` naming the axis."""
    valid = AXES[axis]
    text = value.strip().lower() if isinstance(value, str) else None
    if text in valid:
        return text
    options = ", ".join(f"'{v}'" for v in valid)
    hint = did_you_mean(text, valid) if text is not None else ""
    raise ConfigError(
        f"Invalid value {shorten(value, quote=True)} for the {axis} axis; valid values are "
        f"{options}.{hint}"
    )


def route_for(*, task: Relation, domain: Relation, order: Order) -> Route:
    """Return the route at the cube cell given by three axis values.

    Keyword-only: three strings of the same two words are easy to swap.

    Args:
        task: ``"same"`` or ``"different"``: is the second problem the same kind of task?
        domain: ``"same"`` or ``"different"``: does its data come from the same distribution and
            modality?
        order: ``"sequential"`` (one problem after the other) or ``"simultaneous"`` (both at once).

    Values are matched case-insensitively, ignoring surrounding spaces.

    Returns:
        The :class:`Route`, e.g.
        ``route_for(task="different", domain="same", order="sequential")`` is
        ``Route.TASK_ADAPTATION``.

    Raises:
        ConfigError: when a value is not valid for its axis; the message names the axis, the bad
            value and the valid values, and suggests the nearest one.
    """
    key = (_axis_value("task", task), _axis_value("domain", domain), _axis_value("order", order))
    return _BY_AXES[key]
