"""The report's pictures as PNG bytes: the cube, learning curves and feature maps.

Every figure is drawn on matplotlib's Agg canvas (no window, no display needed) and closed
after saving, so building many reports does not accumulate figures.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from tlroutes.matrix import Route

DPI = 110
"""Resolution of the report's pictures (dots per inch)."""
MAX_PANELS = 12
"""Learning-curve panels per stage at most; the rest are listed as left out."""
SKIPPED_KEYS = ("stage", "epoch", "lr", "time_s")
PANEL_WIDTH_PX = 270
"""Display width of one curve panel in the page (CSS pixels), equal for every stage's figure."""
DOMAIN_COLOURS = ("#1f6fb4", "#e0752d")  # source, target


def to_png(fig: Any, dpi: int = DPI) -> bytes:
    """``fig`` as PNG bytes (white background)."""
    buffer = io.BytesIO()
    # No bbox_inches="tight": it draws the figure twice; tight_layout has placed everything.
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure (not pyplot) is never registered globally, so nothing needs closing.
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def cube_png(route: Route) -> bytes:
    """The cube with ``route`` highlighted (see :func:`tlroutes.cube_picture.draw_cube`)."""
    from tlroutes.cube_picture import draw_cube

    return to_png(draw_cube(route), dpi=80)


def curve_panels(records: list[dict[str, Any]]) -> list[str]:
    """The panel names of one stage's records: each logged quantity without its train_/val_."""
    names: list[str] = []
    for record in records:
        for key, value in record.items():
            if key in SKIPPED_KEYS or not isinstance(value, int | float):
                continue
            base = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
            if base not in names:
                names.append(base)
    return names


def curves_png(
    by_seed: dict[str, list[dict[str, Any]]], stage: str, best_epoch: int | None = None
) -> tuple[bytes, int, list[str]]:
    """Learning curves of one stage: a panel per quantity, train dashed and validation solid.

    Args:
        by_seed: the stage's metrics lines by seed label (``""`` for a single seed).
        stage: the stage's name (the figure's title).
        best_epoch: the selected epoch, marked by a dotted line. Default None: unmarked.

    Returns:
        The PNG, its display width in CSS pixels (:data:`PANEL_WIDTH_PX` per column, so that
        every stage's figure shows its text at one size) and the names of panels left out
        beyond :data:`MAX_PANELS`.
    """
    from matplotlib.ticker import MaxNLocator

    records = [r for rs in by_seed.values() for r in rs]
    panels = curve_panels(records)
    shown, left = panels[:MAX_PANELS], panels[MAX_PANELS:]
    cols = min(4, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig = _figure(3.0 * cols, 2.3 * rows + 0.4)
    fig.suptitle(f"stage: {stage}", fontsize=12, fontweight="bold")
    several = len(by_seed) > 1
    for i, name in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, (label, lines) in enumerate(by_seed.items()):
            for prefix, style in (("train_", "--"), ("val_", "-"), ("", ":")):
                key = prefix + name
                points = [(r["epoch"] + 1, r[key]) for r in lines
                          if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
                if not points:
                    continue
                x, y = zip(*points, strict=True)
                what = {"train_": "train", "val_": "val", "": name}[prefix]
                colour = f"C{j}" if several else ("C0" if prefix == "train_" else "C1")
                ax.plot(x, y, style, color=colour, marker="o", markersize=2.5, linewidth=1.4,
                        label=f"{label} {what}".strip())
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="#888888", linestyle=":", linewidth=1)
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return to_png(fig), PANEL_WIDTH_PX * cols, left


def feature_maps_png(npz: Path, tsne: bool = True) -> tuple[bytes, dict[str, Any]]:
    """2-D maps of source and target trunk features before and after adaptation.

    Reads the Domain Adaptation ``features.npz`` (``before``, optional ``after``, ``domain``,
    ``domain_names``). Rows: PCA, then t-SNE (sklearn, perplexity 30, PCA initialisation,
    500 iterations, seed 0); columns: before adaptation (source-only model), after (adapted model).

    Args:
        npz: the features file.
        tsne: also draw the t-SNE row. Default True (a few seconds per map on one core).

    Returns:
        The PNG and facts for the text: ``samples`` per domain, ``states`` drawn.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from tlroutes.runfolder.reads import damaged, read_npz

    data = read_npz(npz, "features.npz")
    lacking = [k for k in ("before", "domain") if k not in data]
    if lacking:
        raise damaged(npz, f"it lacks the array(s) {', '.join(lacking)}", "features.npz")
    domain = data["domain"].astype(int)
    names = [str(n) for n in data["domain_names"]] if "domain_names" in data else [
        "source", "target"]
    states = [("before adaptation (source-only model)", data["before"])]
    if "after" in data:
        states.append(("after adaptation", data["after"]))
    methods = ["PCA"] + (["t-SNE"] if tsne else [])
    fig = _figure(4.6 * len(states), 4.0 * len(methods) + 0.3)
    for r, method in enumerate(methods):
        for c, (title, x) in enumerate(states):
            x = np.asarray(x, dtype=np.float64)
            if method == "PCA":
                xy = PCA(n_components=2).fit_transform(x)
            else:
                perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))
                # 500 iterations (sklearn's default is 1000) look the same at this size, in
                # about half the time.
                xy = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=500,
                          learning_rate="auto", random_state=0).fit_transform(x)
            ax = fig.add_subplot(len(methods), len(states), r * len(states) + c + 1)
            for d in (0, 1):
                mask = domain == d
                ax.scatter(xy[mask, 0], xy[mask, 1], s=7, alpha=0.55, color=DOMAIN_COLOURS[d],
                           label=names[d], linewidths=0)
            ax.set_title(f"{method}: {title}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c == 0:
                ax.legend(fontsize=8, markerscale=2.5, frameon=False, loc="best")
    fig.tight_layout()
    samples = {names[d]: int((domain == d).sum()) for d in (0, 1)}
    return to_png(fig), {"samples": samples, "states": [t for t, _ in states]}
