"""The cube as a picture: 2 rows (order) × 4 columns (task, then domain), one route highlighted.

:func:`draw_cube` draws it on matplotlib's Agg canvas (no window, no display needed); the run
report, ``tlroutes plan`` and ``tlroutes routes --picture`` use it. It needs only the cube
(:mod:`tlroutes.matrix`), never a route module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlroutes.matrix import COLUMNS, ORDERS, RELATIONS, Route, importance_text, route_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["draw_cube"]

_STRONG = "#1f5fa8"
_LIGHT = "#e8eef6"
_HEADER = "#c9d6e8"
_HEADER_TOP = "#a9bfdc"
_EDGE = "#ffffff"
_INK = "#1c2733"


def _wrap_title(title: str) -> str:
    """Break a route title into two lines at its last space (titles are two or three words)."""
    head, _, tail = title.rpartition(" ")
    return f"{head}\n{tail}" if head else title


def _centred_lines(ax: Any, x: float, y: float, text: str, size: float, color: str) -> None:
    """Write ``text`` line by line, centred on ``(x, y)``, with the same spacing in every cell.

    Placing each baseline by hand (in points) keeps cells whose words have descenders ("y", "g")
    from sitting higher or lower than the others, as one multi-line text object would.
    """
    from matplotlib.transforms import offset_copy

    lines = text.split("\n")
    step = 1.3 * size  # baseline-to-baseline distance, points
    cap = 0.72 * size  # approximate cap height, points
    first = ((len(lines) - 1) * step + cap) / 2 - cap  # first baseline above the centre
    for k, line in enumerate(lines):
        shift = offset_copy(ax.transData, fig=ax.figure, y=first - k * step, units="points")
        ax.text(
            x,
            y,
            line,
            transform=shift,
            ha="center",
            va="baseline",
            fontsize=size,
            fontweight="bold",
            color=color,
        )


def draw_cube(highlight: Route | str | None = None, path: str | Path | None = None,
              importance: Mapping[str, str] | None = None) -> Figure:
    """Draw the cube as a picture: 2 rows (order) × 4 columns (task, then domain).

    The columns follow :data:`~tlroutes.matrix.COLUMNS` (the same order as the terminal table
    :func:`tlroutes.routes.explain.cube_table`): a top header
    ``Task: same`` / ``Task: different`` spanning two columns each, and under it
    ``Domain: same`` / ``Domain: different``.

    Args:
        highlight: a route (or any name :meth:`Route.parse` accepts) whose cell is filled in a
            strong colour. Default ``None``: all cells light.
        path: where to save the picture as PNG (150 dpi); parent folders are created. Default
            ``None``: not saved.
        importance: the run's ``importance:`` (problem → main | auxiliary); when given, the
            fourth axis is written under the title (:data:`~tlroutes.matrix.IMPORTANCES`).
            Default None.

    Returns:
        The :class:`matplotlib.figure.Figure` (drawn with the Agg backend; no window opens). Each
        cell's rectangle carries the route id as its ``gid``.

    Raises:
        ConfigError: when ``highlight`` names no route.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    chosen = None if highlight is None else Route.parse(highlight)

    label_w, cell_w, cell_h, head_h = 1.7, 2.4, 1.45, 0.55
    width = label_w + 4 * cell_w
    height = 2 * head_h + 2 * cell_h

    fig = Figure(figsize=(10.5, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.01, 0.02, 0.98, 0.84))
    ax.set_xlim(-0.05, width + 0.05)
    ax.set_ylim(-0.05, height + 0.05)
    ax.set_axis_off()

    def box(x: float, y: float, w: float, h: float, color: str, **kwargs: Any) -> Rectangle:
        rect = Rectangle((x, y), w, h, facecolor=color, edgecolor=_EDGE, linewidth=3, **kwargs)
        ax.add_patch(rect)
        return rect

    def label(x: float, y: float, text: str, size: float, **style: Any) -> None:
        ax.text(x, y, text, ha="center", va="center", fontsize=size, color=_INK, **style)

    top_y = height - head_h
    sub_y = height - 2 * head_h

    # Corner: the axis names.
    box(0, sub_y, label_w, 2 * head_h, _HEADER_TOP)
    label(label_w / 2, sub_y + head_h, "Order ↓\nTask / Domain →", 10)

    # Column headers: task on top (spanning two columns), domain underneath.
    for i, task in enumerate(RELATIONS):
        x = label_w + 2 * i * cell_w
        box(x, top_y, 2 * cell_w, head_h, _HEADER_TOP)
        label(x + cell_w, top_y + head_h / 2, f"Task: {task}", 12, fontweight="bold")
    for j, (_, domain) in enumerate(COLUMNS):
        x = label_w + j * cell_w
        box(x, sub_y, cell_w, head_h, _HEADER)
        label(x + cell_w / 2, sub_y + head_h / 2, f"Domain: {domain}", 11)

    # Rows: order label, then the four routes.
    for r, order in enumerate(ORDERS):
        y = sub_y - (r + 1) * cell_h
        box(0, y, label_w, cell_h, _HEADER)
        label(label_w / 2, y + cell_h / 2, f"Order:\n{order}", 11, linespacing=1.4)
        for j, (task, domain) in enumerate(COLUMNS):
            route = route_for(task=task, domain=domain, order=order)
            on = route is chosen
            x = label_w + j * cell_w
            box(x, y, cell_w, cell_h, _STRONG if on else _LIGHT, gid=route.value)
            _centred_lines(
                ax,
                x + cell_w / 2,
                y + cell_h / 2,
                _wrap_title(route.title),
                size=13,
                color="white" if on else _INK,
            )

    title = "Transfer learning: the eight routes"
    fig.suptitle(title, fontsize=15, fontweight="bold", color=_INK, y=0.965)
    if chosen is not None:
        said = f"this project: {chosen.title}"
        if importance:
            said += f"  ·  importance: {importance_text(importance)}"
        fig.text(0.5, 0.885, said, ha="center", fontsize=11, color=_STRONG)

    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, format="png", facecolor="white")
    return fig
