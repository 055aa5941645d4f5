"""What a run found: the typed summary every route returns and ``summary.json`` holds.

A :class:`Summary` names the route, its primary metric and direction, the test metrics of the
transferred model and of its baseline, the signed gain, and what else the run measured. The
route's own facts (its schedule, per-task or per-source tables, jobs …) are its ``details``.

Several seeds give the same type: :func:`aggregate` averages ``metrics``, ``baseline``,
``baselines``, ``also`` and ``gain`` over the seeds, adds their sample standard deviations
(``*_std``) and keeps every seed's own summary under ``per_seed``.

JSON (``summary.json``) stays flat, as earlier versions wrote it: the common fields at the top
(the title as ``route_title``) and each detail beside them, so old run folders read back through
:meth:`Summary.from_dict` and scripts that read the file keep working.

This module sits low (it imports pydantic only), so every layer may return or read a summary.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tlroutes.errors import ConfigError

Metrics = dict[str, float]
"""Metric name → value, e.g. ``{"accuracy": 0.91, "f1": 0.88}``."""

# Fields only a summary over several seeds carries; left out of a one-seed summary's JSON.
_SEED_FIELDS = ("seeds", "metrics_std", "baseline_std", "baselines_std", "gain_std",
                "negative_transfer_consistent", "per_seed")


class Summary(BaseModel):
    """One run's result, for one seed or averaged over several.

    Attributes:
        route: the route's registered name, e.g. ``"task_fine_tuning"``.
        title: its display name, e.g. ``"Task Fine-Tuning"`` (``route_title`` in JSON).
        primary_metric: the metric the gain is measured on, e.g. ``"accuracy"``.
        higher_is_better: whether a larger ``primary_metric`` is better. Default True.
        metrics: test metrics of the transferred model (means over seeds when aggregated).
        baseline: test metrics of the baseline the gain is measured against; None when none was
            trained. Default None.
        baseline_kind: which baseline that is, e.g. ``"source_only"``; None for the route's
            usual from-scratch (or single-problem) baseline. Default None.
        baselines: every baseline the run trained, by kind (``baseline`` is one of them when
            ``baseline_kind`` is set). Default {}.
        gain: the primary metric's improvement over the baseline, signed so that positive means
            transfer helped (``baseline - metric`` for a lower-is-better metric). Default None.
        negative_transfer: True when ``gain`` is below zero; None without a baseline.
        also: other comparisons by name (controls, other baselines), each on the primary
            metric. Default {}.
        carried_over: what the run carried over or shared, in words. Default "".
        source, target: the problems' names, when the route has a source and a target.
        metric_note, baseline_note: how ``metrics`` / ``baseline`` were made, when that needs
            saying. Default None.
        details: the route's own facts (see each route module's docstring). Default {}.
        seed: the run seed of a one-seed summary; None for an aggregate. Default None.
        seeds: the seeds averaged (aggregates only). Default None.
        metrics_std, baseline_std, baselines_std, gain_std: sample standard deviations over
            the seeds (aggregates only; 0 for one seed). Default None.
        negative_transfer_consistent: True when every seed's gain is below zero (aggregates
            only). Default None.
        per_seed: every seed's own summary (aggregates only). Default [].
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    route: str
    title: str = Field(alias="route_title")
    primary_metric: str
    higher_is_better: bool = True
    metrics: Metrics
    baseline: Metrics | None = None
    baseline_kind: str | None = None
    baselines: dict[str, Metrics | None] = Field(default_factory=dict)
    gain: float | None = None
    negative_transfer: bool | None = None
    also: dict[str, float] = Field(default_factory=dict)
    carried_over: str = ""
    source: str | None = None
    target: str | None = None
    metric_note: str | None = None
    baseline_note: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    seeds: list[int] | None = None
    metrics_std: Metrics | None = None
    baseline_std: Metrics | None = None
    baselines_std: dict[str, Metrics | None] | None = None
    gain_std: float | None = None
    negative_transfer_consistent: bool | None = None
    per_seed: list[Summary] = Field(default_factory=list)

    @model_validator(mode="after")
    def _details_do_not_shadow_fields(self) -> Summary:
        # The JSON is flat, so a detail named like a field would overwrite it when written.
        clash = sorted(set(self.details) & _json_keys())
        if clash:
            raise ValueError(f"details {clash} have the names of summary fields; rename them")
        return self

    @property
    def aggregated(self) -> bool:
        """True for a summary over several seeds (``per_seed`` holds each)."""
        return bool(self.per_seed)

    def get(self, key: str, default: Any = None) -> Any:
        """A field (by name or JSON name) or a detail named ``key``; ``default`` when absent.

        For code that reads any entry by name, such as the report's generic table.
        """
        name = "title" if key == "route_title" else key
        if name in Summary.model_fields:
            value = getattr(self, name)
            return default if value is None else value
        return self.details.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``summary.json``): common fields, then the details, flat.

        A one-seed summary leaves out the fields only aggregates carry.
        """
        skip = {"details", "per_seed"} | (set() if self.aggregated else set(_SEED_FIELDS))
        out = self.model_dump(mode="json", by_alias=True, exclude=skip)
        out.update(self.details)
        if self.aggregated:
            out["per_seed"] = [one.to_dict() for one in self.per_seed]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "summary") -> Summary:
        """Read the JSON form back: known keys fill the fields, every other key is a detail.

        Reads what :meth:`to_dict` writes and the summaries of earlier versions.

        Args:
            data: the parsed ``summary.json``.
            where: what the data is, for the error message (e.g. its path). Default "summary".

        Raises:
            ConfigError: a field is missing or has the wrong type (the message names it).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a JSON object, not {type(data).__name__}.")
        known = _json_keys()
        fields = {k: v for k, v in data.items() if k in known and k != "per_seed"}
        fields["details"] = {k: v for k, v in data.items() if k not in known}
        fields["per_seed"] = [cls.from_dict(one, where=f"{where} (per_seed)")
                              for one in data.get("per_seed") or []]
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in exc.errors())
            raise ConfigError(f"{where} is not a tlroutes summary ({problems}). Run the route "
                              "again, or restore the file.") from None


def _json_keys() -> set[str]:
    """Top-level JSON keys the fields use (the alias where one is set)."""
    return {f.alias or name for name, f in Summary.model_fields.items()} - {"details"}


def aggregate(summaries: list[Summary]) -> Summary:
    """One summary over seeds: means of ``metrics``, ``baseline``, ``baselines``, ``also``
    and ``gain``, with sample standard deviations in the ``*_std`` fields.

    ``negative_transfer`` is flagged when the mean gain is below zero,
    ``negative_transfer_consistent`` when every seed's gain is. Names, notes and ``details``
    come from the first seed (each seed's own are under ``per_seed``).

    Args:
        summaries: one summary per seed, in seed order; at least one.

    Raises:
        ValueError: ``summaries`` is empty.
    """
    if not summaries:
        raise ValueError("aggregate needs at least one summary")
    first = summaries[0]
    gains = [s.gain for s in summaries if s.gain is not None]
    baselines = {kind: [s.baselines.get(kind) for s in summaries] for kind in first.baselines}
    mean_gain = statistics.fmean(gains) if gains else None
    return first.model_copy(update={
        "seed": None,
        "seeds": [s.seed for s in summaries if s.seed is not None],
        "metrics": _mean([s.metrics for s in summaries]),
        "metrics_std": _std([s.metrics for s in summaries]),
        "baseline": _mean_or_none([s.baseline for s in summaries]),
        "baseline_std": _std_or_none([s.baseline for s in summaries]),
        "baselines": {k: _mean_or_none(v) for k, v in baselines.items()},
        "baselines_std": {k: _std_or_none(v) for k, v in baselines.items()},
        "also": _mean([s.also for s in summaries]),
        "gain": mean_gain,
        "gain_std": _spread(gains) if gains else None,
        "negative_transfer": None if mean_gain is None else mean_gain < 0,
        "negative_transfer_consistent": None if not gains else all(g < 0 for g in gains),
        "per_seed": list(summaries),
    })


def _mean(dicts: list[Metrics]) -> Metrics:
    """Per key, the mean over the dicts that hold it (keys in the first dict's order)."""
    keys = dict.fromkeys(k for d in dicts for k in d)
    return {k: statistics.fmean(d[k] for d in dicts if k in d) for k in keys}


def _std(dicts: list[Metrics]) -> Metrics:
    keys = dict.fromkeys(k for d in dicts for k in d)
    return {k: _spread([d[k] for d in dicts if k in d]) for k in keys}


def _mean_or_none(dicts: list[Metrics | None]) -> Metrics | None:
    # A baseline missing in one seed has no honest mean: report none rather than a partial one.
    return None if any(d is None for d in dicts) else _mean(dicts)  # type: ignore[arg-type]


def _std_or_none(dicts: list[Metrics | None]) -> Metrics | None:
    return None if any(d is None for d in dicts) else _std(dicts)  # type: ignore[arg-type]


def _spread(values: list[float]) -> float:
    """Sample standard deviation; 0 for one value (NaN values give NaN)."""
    if len(values) < 2:
        return 0.0
    if any(math.isnan(v) for v in values):
        return math.nan
    return statistics.stdev(values)
