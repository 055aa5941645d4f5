"""Table content shared by the command line, the run report and the demo index.

Numbers are formatted here once, so that every view of a run shows the same text.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from tlroutes.summary import Summary

SUMMARY_COLUMNS: tuple[str, ...] = (
    "route", "carried over / shared", "metric", "transfer", "baseline", "gain", "also measured",
)
"""The columns of :func:`summary_rows`, in display order (as ``tlroutes run`` prints them)."""

NEGATIVE = "negative transfer"

# Metric names (or name endings, e.g. "mean_mse") for which a smaller value is better.
_LOWER_IS_BETTER = ("mse", "mae", "loss", "rmse")


def fmt(value: Any, digits: int = 3) -> str:
    """A number as text with ``digits`` decimals (default 3); ``-`` for None; others as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_spread(mean: float | None, std: float | None, digits: int = 3, sign: bool = False) -> str:
    """``mean ± std`` (``± std`` left out when std is None); ``sign`` forces a leading +/-."""
    if mean is None:
        return "-"
    text = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def fmt_values(values: list[float], digits: int = 3, sign: bool = False) -> str:
    """The mean of ``values``, with ``± sample std`` when there are several (one per seed)."""
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else None
    return fmt_spread(statistics.fmean(values), std, digits, sign)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False for mse, mae and losses)."""
    return not metric.lower().endswith(_LOWER_IS_BETTER)


def gain_text(summary: Summary) -> str:
    """The transfer gain as text: signed, ``± std`` over seeds, and ``(negative transfer)``."""
    if summary.gain is None:
        return "-"
    text = fmt_spread(summary.gain, summary.gain_std, sign=True)
    if summary.negative_transfer:
        text += f" ({NEGATIVE})"
    return text


def also_text(summary: Summary) -> str:
    """Other comparisons the run measured (controls, other baselines), as ``name value; …``."""
    return "; ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in summary.also.items())


def as_summary(summary: Summary | Mapping[str, Any]) -> Summary:
    """``summary`` as a :class:`Summary` (a dict is read as ``summary.json`` would be)."""
    return summary if isinstance(summary, Summary) else Summary.from_dict(dict(summary))


def summary_rows(summaries: list[Summary] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run summary: the :data:`SUMMARY_COLUMNS` as text, plus two extra keys.

    The extra keys are ``route_id`` (e.g. ``"domain_adaptation"``, for links) and
    ``negative_transfer`` (bool, for colouring). ``transfer`` and ``baseline`` carry
    ``± std`` when the summary spans several seeds. A summary may be given as its JSON dict.
    """
    rows = []
    for one in summaries:
        s = as_summary(one)
        name = s.primary_metric
        base = s.baseline or {}
        metrics_std = s.metrics_std or {}
        base_std = s.baseline_std or {}
        # A route with variants (Domain Adaptation across label sets) names the one that ran.
        variant = s.details.get("variant")
        title = s.title if variant in (None, "closed") else f"{s.title} ({variant})"
        rows.append({
            "route": title,
            "carried over / shared": s.carried_over,
            "metric": name,
            "transfer": fmt_spread(s.metrics.get(name), metrics_std.get(name)),
            "baseline": fmt_spread(base[name], base_std.get(name)) if name in base else "-",
            "gain": gain_text(s),
            "also measured": also_text(s),
            "route_id": s.route,
            "negative_transfer": bool(s.negative_transfer),
        })
    return rows


def seed_values(summary: Summary, *path: str) -> list[float]:
    """The number at ``path`` (a field or detail, then keys into nested dicts) in every seed.

    A summary over several seeds keeps route details (per-task, per-source, jobs …) of its
    first seed only; its ``per_seed`` list has them all, so spreads are computed from there. A
    single-seed summary gives one value; a missing or non-numeric entry gives none.
    """
    out = []
    for one in summary.per_seed or [summary]:
        value: Any = one.get(path[0])
        for key in path[1:]:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append(float(value))
    return out
