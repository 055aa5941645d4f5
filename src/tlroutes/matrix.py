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

This module holds the axis values, the :class:`Route` enum (with each route's explanation, example
and sharing pattern), :func:`route_for` (axes → route), and the cube as a rich table
(:func:`cube_table`, :func:`explain_table`) and as a picture (:func:`draw_cube`).
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tlroutes.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

__all__ = [
    "AXES",
    "COLUMNS",
    "DIFFERENT",
    "ORDERS",
    "RELATIONS",
    "SAME",
    "SEQUENTIAL",
    "SIMULTANEOUS",
    "Order",
    "Relation",
    "Route",
    "cube_table",
    "draw_cube",
    "explain_table",
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

# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------

_INFO: dict[str, dict] = {
    "task_fine_tuning": {
        "title": "Task Fine-Tuning",
        "axes": (SAME, SAME, SEQUENTIAL),
        "explanation": (
            "Pretrain on a broad dataset, then fine-tune the whole network on a narrower dataset "
            "of the same domain and the same kind of task, with a new head for the new labels."
        ),
        "example": "ImageNet classifier → dog-breed classifier",
        "sharing": {
            "stems": "carried over",
            "trunk": "carried over, fine-tuned",
            "heads": "new head, same kind",
            "stages": "source → target",
        },
    },
    "domain_adaptation": {
        "title": "Domain Adaptation",
        "axes": (SAME, DIFFERENT, SEQUENTIAL),
        "explanation": (
            "Keep the task but move to a new domain given by a second dataset; the trunk is "
            "aligned across domains, with target labels (supervised) or without them "
            "(unsupervised: DANN, CORAL, MMD …)."
        ),
        "example": "ImageNet classifier → healthy/sick x-ray classifier",
        "sharing": {
            "stems": "carried over",
            "trunk": "carried over, aligned across domains",
            "heads": "carried over",
            "stages": "source → target",
        },
    },
    "task_adaptation": {
        "title": "Task Adaptation",
        "axes": (DIFFERENT, SAME, SEQUENTIAL),
        "explanation": (
            "Use the pretrained backbone as a feature extractor for a new kind of task in the "
            "same domain: freeze it, train a new head, then maybe tune both (LP-FT)."
        ),
        "example": "classifier backbone + a new network for object localisation",
        "sharing": {
            "stems": "carried over",
            "trunk": "carried over, frozen then maybe tuned (LP-FT)",
            "heads": "new head, new kind",
            "stages": "source → target",
        },
    },
    "modality_transfer": {
        "title": "Modality Transfer",
        "axes": (DIFFERENT, DIFFERENT, SEQUENTIAL),
        "explanation": (
            "Reuse a pretrained trunk although both domain and task differ: a new stem adapts the "
            "new input, a new head produces the new output, and the trunk stays mostly frozen."
        ),
        "example": "photo classifier backbone → detection on x-rays",
        "sharing": {
            "stems": "new stem",
            "trunk": "carried over, mostly frozen",
            "heads": "new head",
            "stages": "source → target",
        },
    },
    "dataset_merging": {
        "title": "Dataset Merging",
        "axes": (SAME, SAME, SIMULTANEOUS),
        "explanation": (
            "Train on two datasets of the same task and domain at once, as if they were one "
            "larger dataset."
        ),
        "example": "ImageNet + scraped images",
        "sharing": {
            "stems": "one, shared",
            "trunk": "shared",
            "heads": "one, shared",
            "stages": "one joint stage",
        },
    },
    "weight_sharing": {
        "title": "Weight Sharing",
        "axes": (SAME, DIFFERENT, SIMULTANEOUS),
        "explanation": (
            "Learn the same task on two domains or modalities at once: one stem per domain maps "
            "into a shared intermediate representation that one trunk and one head use."
        ),
        "example": "OCR text + page image → one page classifier",
        "sharing": {
            "stems": "one per domain",
            "trunk": "shared",
            "heads": "one, shared",
            "stages": "one joint stage",
        },
    },
    "multi_task_learning": {
        "title": "Multi-Task Learning",
        "axes": (DIFFERENT, SAME, SIMULTANEOUS),
        "explanation": (
            "Learn several tasks on one domain at once: a shared backbone feeds one head per task."
        ),
        "example": "one camera feed → object detection + lane marking",
        "sharing": {
            "stems": "one, shared",
            "trunk": "shared",
            "heads": "one per task",
            "stages": "one joint stage",
        },
    },
    "parallel_training": {
        "title": "Parallel Training",
        "axes": (DIFFERENT, DIFFERENT, SIMULTANEOUS),
        "explanation": (
            "Train unrelated problems at the same time, side by side, with separate models that "
            "share only the schedule and the infrastructure."
        ),
        "example": "content moderation and e-mail classification for one client",
        "sharing": {
            "stems": "separate",
            "trunk": "separate",
            "heads": "separate",
            "stages": "concurrent, independent",
        },
    },
}


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
        return _INFO[self.value]["title"]

    @property
    def task(self) -> Relation:
        """Task axis: ``"same"`` or ``"different"``."""
        return _INFO[self.value]["axes"][0]

    @property
    def domain(self) -> Relation:
        """Domain axis: ``"same"`` or ``"different"``."""
        return _INFO[self.value]["axes"][1]

    @property
    def order(self) -> Order:
        """Order axis: ``"sequential"`` or ``"simultaneous"``."""
        return _INFO[self.value]["axes"][2]

    @property
    def sequential(self) -> bool:
        """True for the four sequential routes (a chain of stages)."""
        return self.order == SEQUENTIAL

    @property
    def explanation(self) -> str:
        """One or two sentences saying what the route does."""
        return _INFO[self.value]["explanation"]

    @property
    def example(self) -> str:
        """A one-line example of a project on this route."""
        return _INFO[self.value]["example"]

    @property
    def sharing(self) -> dict[str, str]:
        """What the two problems have in common: keys ``stems``, ``trunk``, ``heads``, ``stages``.

        Returns a fresh dict each time, so callers may modify it.
        """
        return dict(_INFO[self.value]["sharing"])

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
            f"Unknown route {name!r}. Valid routes are: {valid} "
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
        f"Invalid value {value!r} for the {axis} axis; valid values are {options}.{hint}"
    )


def route_for(task: str, domain: str, order: str) -> Route:
    """Return the route at the cube cell given by three axis values.

    Args:
        task: ``"same"`` or ``"different"``: is the second problem the same kind of task?
        domain: ``"same"`` or ``"different"``: does its data come from the same distribution and
            modality?
        order: ``"sequential"`` (one problem after the other) or ``"simultaneous"`` (both at once).

    Values are matched case-insensitively, ignoring surrounding spaces.

    Returns:
        The :class:`Route`, e.g. ``route_for("different", "same", "sequential")`` is
        ``Route.TASK_ADAPTATION``.

    Raises:
        ConfigError: when a value is not valid for its axis; the message names the axis, the bad
            value and the valid values, and suggests the nearest one.
    """
    key = (_axis_value("task", task), _axis_value("domain", domain), _axis_value("order", order))
    return _BY_AXES[key]


def _optional_route(highlight: Route | str | None) -> Route | None:
    return None if highlight is None else Route.parse(highlight)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def cube_table(highlight: Route | str | None = None) -> Table:
    """The cube as a rich table: rows are the orders, columns the four (task, domain) pairs.

    Args:
        highlight: a route (or any name :meth:`Route.parse` accepts) whose cell is styled bold
            reverse. Default ``None``: no cell is highlighted.

    Returns:
        A :class:`rich.table.Table`; print it with ``rich.print`` or a ``rich.console.Console``.

    Raises:
        ConfigError: when ``highlight`` names no route.
    """
    from rich.table import Table
    from rich.text import Text

    chosen = _optional_route(highlight)
    title = "The eight routes of transfer learning"
    if chosen is not None:
        title += f" — this project: {chosen.title}"
    table = Table(title=title, show_lines=True)
    table.add_column("order", style="bold")
    for task, domain in COLUMNS:
        table.add_column(f"{task} task\n{domain} domain", justify="center")
    for order in ORDERS:
        cells: list[Text] = []
        for task, domain in COLUMNS:
            route = _BY_AXES[(task, domain, order)]
            style = "bold reverse" if route is chosen else ""
            cells.append(Text(route.title, style=style))
        table.add_row(order, *cells)
    return table


def explain_table() -> Table:
    """Every route with its three axis values, an explanation and an example, as a rich table.

    Returns:
        A :class:`rich.table.Table` with one row per route, in cube order (sequential first).
    """
    from rich.table import Table

    table = Table(title="The eight routes", show_lines=True)
    table.add_column("route", style="bold", no_wrap=True)
    table.add_column("task")
    table.add_column("domain")
    table.add_column("order")
    table.add_column("what it does", ratio=3)
    table.add_column("example", ratio=2)
    for route in Route:
        table.add_row(
            route.title, route.task, route.domain, route.order, route.explanation, route.example
        )
    return table


# --------------------------------------------------------------------------------------------------
# Picture
# --------------------------------------------------------------------------------------------------

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


def _centred_lines(ax, x: float, y: float, text: str, size: float, color: str) -> None:
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


def draw_cube(highlight: Route | str | None = None, path: str | Path | None = None) -> Figure:
    """Draw the cube as a picture: 2 rows (order) × 4 columns (task, then domain).

    The columns follow :data:`COLUMNS` (the same order as :func:`cube_table`): a top header
    ``Task: same`` / ``Task: different`` spanning two columns each, and under it
    ``Domain: same`` / ``Domain: different``.

    Args:
        highlight: a route (or any name :meth:`Route.parse` accepts) whose cell is filled in a
            strong colour. Default ``None``: all cells light.
        path: where to save the picture as PNG (150 dpi); parent folders are created. Default
            ``None``: not saved.

    Returns:
        The :class:`matplotlib.figure.Figure` (drawn with the Agg backend; no window opens). Each
        cell's rectangle carries the route id as its ``gid``.

    Raises:
        ConfigError: when ``highlight`` names no route.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    chosen = _optional_route(highlight)

    label_w, cell_w, cell_h, head_h = 1.7, 2.4, 1.45, 0.55
    width = label_w + 4 * cell_w
    height = 2 * head_h + 2 * cell_h

    fig = Figure(figsize=(10.5, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.01, 0.02, 0.98, 0.84))
    ax.set_xlim(-0.05, width + 0.05)
    ax.set_ylim(-0.05, height + 0.05)
    ax.set_axis_off()

    def box(x: float, y: float, w: float, h: float, color: str, **kwargs) -> Rectangle:
        rect = Rectangle((x, y), w, h, facecolor=color, edgecolor=_EDGE, linewidth=3, **kwargs)
        ax.add_patch(rect)
        return rect

    top_y = height - head_h
    sub_y = height - 2 * head_h

    # Corner: the axis names.
    box(0, sub_y, label_w, 2 * head_h, _HEADER_TOP)
    ax.text(
        label_w / 2,
        sub_y + head_h,
        "Order ↓\nTask / Domain →",
        ha="center",
        va="center",
        fontsize=10,
        color=_INK,
    )

    # Column headers: task on top (spanning two columns), domain underneath.
    for i, task in enumerate(RELATIONS):
        x = label_w + 2 * i * cell_w
        box(x, top_y, 2 * cell_w, head_h, _HEADER_TOP)
        ax.text(
            x + cell_w,
            top_y + head_h / 2,
            f"Task: {task}",
            ha="center",
            va="center",
            fontsize=12,
            fontweight="bold",
            color=_INK,
        )
    for j, (_, domain) in enumerate(COLUMNS):
        x = label_w + j * cell_w
        box(x, sub_y, cell_w, head_h, _HEADER)
        ax.text(
            x + cell_w / 2,
            sub_y + head_h / 2,
            f"Domain: {domain}",
            ha="center",
            va="center",
            fontsize=11,
            color=_INK,
        )

    # Rows: order label, then the four routes.
    for r, order in enumerate(ORDERS):
        y = sub_y - (r + 1) * cell_h
        box(0, y, label_w, cell_h, _HEADER)
        ax.text(
            label_w / 2,
            y + cell_h / 2,
            f"Order:\n{order}",
            ha="center",
            va="center",
            fontsize=11,
            color=_INK,
            linespacing=1.4,
        )
        for j, (task, domain) in enumerate(COLUMNS):
            route = _BY_AXES[(task, domain, order)]
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
        fig.text(
            0.5, 0.885, f"this project: {chosen.title}", ha="center", fontsize=11, color=_STRONG
        )

    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, format="png", facecolor="white")
    return fig
