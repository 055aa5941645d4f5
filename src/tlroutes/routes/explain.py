"""What ``tlroutes routes`` prints: the cube, and each route with its prose, as rich tables.

:func:`cube_table` needs only the cube (:mod:`tlroutes.matrix`); :func:`explain_table` reads each
route's prose (``PROSE``) from the route's own module through the route registry,
so it lives here, at the routes layer, and imports the route modules (and with them torch) only
when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from tlroutes.matrix import COLUMNS, ORDERS, Route, importance_text, route_for
from tlroutes.routes.registry import get_route, list_routes, prose_of, title_of

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["cube_table", "explain_table"]


def cube_table(highlight: Route | str | None = None,
               importance: Mapping[str, str] | None = None) -> Table:
    """The cube as a rich table: rows are the orders, columns the four (task, domain) pairs.

    Args:
        highlight: a route (or any name :meth:`Route.parse` accepts) whose cell is styled bold
            reverse. Default ``None``: no cell is highlighted.
        importance: the run's ``importance:`` (problem → main | auxiliary), shown in the title
            when given (the fourth axis, :data:`~tlroutes.matrix.IMPORTANCES`). Default None.

    Returns:
        A :class:`rich.table.Table`; print it with ``rich.print`` or a ``rich.console.Console``.

    Raises:
        ConfigError: when ``highlight`` names no route.
    """
    from rich.table import Table
    from rich.text import Text

    chosen = None if highlight is None else Route.parse(highlight)
    title = "The eight routes of transfer learning"
    if chosen is not None:
        title += f" — this project: {chosen.title}"
    if importance:
        title += f" — importance: {importance_text(importance)}"
    table = Table(title=title, show_lines=True)
    table.add_column("order", style="bold")
    for task, domain in COLUMNS:
        table.add_column(f"{task} task\n{domain} domain", justify="center")
    for order in ORDERS:
        cells: list[Text] = []
        for task, domain in COLUMNS:
            route = route_for(task=task, domain=domain, order=order)
            style = "bold reverse" if route is chosen else ""
            cells.append(Text(route.title, style=style))
        table.add_row(order, *cells)
    return table


def explain_table() -> Table:
    """Every registered route with its cube cell, its explanation and its example, as a table.

    The prose comes from each route's module (``PROSE``) through the route registry,
    so a plug-in route appears here once registered.

    Returns:
        A :class:`rich.table.Table` with one row per route: the eight built-in ones in cube
        order (sequential first), then plug-ins in the order they were registered.
    """
    from rich.table import Table

    names = list_routes()
    table = Table(title="The eight routes" if len(names) == len(Route) else
                  f"The eight routes and {len(names) - len(Route)} plug-in route(s)",
                  show_lines=True)
    table.add_column("route", style="bold", no_wrap=True)
    table.add_column("task")
    table.add_column("domain")
    table.add_column("order")
    table.add_column("importance", ratio=1)
    table.add_column("what it does", ratio=3)
    table.add_column("example", ratio=2)
    for name in names:
        module = get_route(name)
        cell, prose = module.ROUTE, prose_of(module)
        table.add_row(title_of(module), cell.task, cell.domain, cell.order,
                      _importance(module), prose.explanation, prose.example)
    return table


def _importance(module) -> str:
    """What the fourth axis means for a route: read from what its run file takes."""
    if "importance" in (getattr(module, "RUN_FILE_BLOCKS", None) or ()):
        return "equal, or one main task with auxiliary ones (importance:)"
    if module.ROUTE.sequential:
        return "the target is the main task; the source serves it"
    return "equal"
