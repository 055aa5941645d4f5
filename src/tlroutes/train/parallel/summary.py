"""The summary of a Parallel Training run: means over the jobs, each job's result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tlroutes.errors import TLRoutesError
from tlroutes.summary import Summary
from tlroutes.train.parallel.jobs import JobResult, Outcome


def aggregate_metrics(results: Mapping[str, JobResult]) -> dict[str, float]:
    """``mean_<metric>`` over the finished jobs whose primary metric it is, plus ``jobs_ok`` and
    ``jobs_failed``."""
    groups: dict[str, list[float]] = {}
    for r in results.values():
        if r.ok:
            groups.setdefault(r.primary_metric, []).append(r.metrics[r.primary_metric])
    out = {f"mean_{k}": sum(v) / len(v) for k, v in groups.items()}
    out["jobs_ok"] = float(sum(r.ok for r in results.values()))
    out["jobs_failed"] = float(sum(not r.ok for r in results.values()))
    return out


def summarise_jobs(route_id: str, route_title: str, outcome: Outcome,
                   baseline: Outcome | None = None, **extra: Any) -> Summary:
    """The :class:`~tlroutes.summary.Summary` of a Parallel Training run.

    ``metrics`` holds ``mean_<metric>`` over the finished jobs whose primary metric it is (a
    mean of accuracies, a mean of MSEs …) and the counts ``jobs_ok``/``jobs_failed``; the
    primary metric is the mean shared by the most jobs. The details: ``jobs`` has every job's
    own result, ``failed`` each failed job's cause, ``backend``, ``backend_reason`` and
    ``wall_time_s`` the run's; ``also`` holds each finished job's primary metric (the table's
    "also measured"). With a ``baseline`` (the same jobs one after another): its ``metrics``,
    ``gain`` (the signed change of the primary mean: about 0, nothing being shared), each job's
    ``baseline_metrics`` and ``gain``, and the details ``sequential_wall_time_s`` and
    ``speedup``. ``extra`` sets summary fields (e.g. ``baseline_note``) or adds details.

    Raises :class:`TLRoutesError` naming every cause when no job finished.
    """
    results = outcome.results
    if not any(r.ok for r in results.values()):
        causes = "\n".join(f"  - {n}: {r.error}" for n, r in results.items())
        raise TLRoutesError(f"Every job of the Parallel Training run failed:\n{causes}")
    counts: dict[str, int] = {}
    for r in results.values():
        if r.ok:
            counts[r.primary_metric] = counts.get(r.primary_metric, 0) + 1
    metric = max(counts, key=lambda k: counts[k])  # ties: the first job's
    higher = next(r.higher_is_better for r in results.values() if r.primary_metric == metric)
    primary = f"mean_{metric}"
    metrics = aggregate_metrics(results)
    base = aggregate_metrics(baseline.results) if baseline is not None else None
    gain = None
    if base is not None and primary in base:
        gain = (metrics[primary] - base[primary]) * (1 if higher else -1)
    jobs = {}
    for name, r in results.items():
        entry = r.as_dict()
        b = baseline.results.get(name) if baseline is not None else None
        if b is not None:
            entry["baseline_metrics"] = b.metrics
            entry["gain"] = (None if not (r.ok and b.ok) else
                             (r.metrics[r.primary_metric] - b.metrics[b.primary_metric])
                             * (1 if r.higher_is_better else -1))
        jobs[name] = entry
    failed = {n: r.error for n, r in results.items() if not r.ok}
    shared = f"nothing: {len(results)} separate models ({outcome.plan.backend})"
    if failed:
        shared += f"; failed: {', '.join(failed)}"
    details: dict[str, Any] = {
        "backend": outcome.plan.backend,
        "backend_reason": outcome.plan.reason,
        "wall_time_s": outcome.wall_time_s,
        "jobs": jobs,
        "failed": failed,
    }
    if baseline is not None:
        details["sequential_wall_time_s"] = baseline.wall_time_s
        details["speedup"] = baseline.wall_time_s / max(outcome.wall_time_s, 1e-9)
    return Summary(
        route=route_id, title=route_title, primary_metric=primary, higher_is_better=higher,
        metrics=metrics, baseline=base, gain=gain, carried_over=shared,
        also={f"{n} {r.primary_metric}": r.metrics[r.primary_metric]
              for n, r in results.items() if r.ok},
        # The common fields a caller sets (baseline_note …) go to the fields, the rest to
        # the route's details.
        **{k: v for k, v in extra.items() if k in Summary.model_fields},
        details={**details, **{k: v for k, v in extra.items() if k not in Summary.model_fields}},
    )
