"""The route's own part of the report (the ``route-details`` section).

Domain Adaptation draws feature maps, Multi-Task Learning tabulates tasks and Δm, Dataset
Merging its sources and the leakage report, Parallel Training its jobs. Whatever else a summary
holds is shown by :func:`generic_blocks`, so no route's extra facts are lost.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tlroutes.matrix import Route
from tlroutes.report import plots
from tlroutes.report.collect import RunData
from tlroutes.report.document import Block, Cell, Code, Image, Notice, Table, Text
from tlroutes.report.tables import NEGATIVE, fmt, fmt_values, higher_is_better, seed_values

# Summary keys the common sections already show.
SHOWN = {
    "route", "route_title", "primary_metric", "higher_is_better", "metrics", "baseline", "gain",
    "negative_transfer", "also", "seed", "seeds", "per_seed", "metrics_std", "baseline_std",
    "gain_std", "negative_transfer_consistent", "carried_over", "metric_note", "baseline_note",
    "baseline_kind", "baselines", "source", "target",
}


def route_details(run: RunData, tsne: bool = True) -> list[Block]:
    """The blocks of the route's own section (an empty run gets a notice)."""
    s = run.summary
    blocks: list[Block] = []
    if run.route is Route.DOMAIN_ADAPTATION:
        blocks += _domain_adaptation(run, tsne)
    if s is None:
        return blocks + [Notice("The route's results appear here once the run finishes.",
                                "info")]
    used: set[str] = set()
    if run.route is Route.DOMAIN_ADAPTATION:
        used = {"method", "selection", "selection_uses_target_labels", "target_labels"}
    elif run.route is Route.MULTI_TASK_LEARNING:
        blocks, used = _multi_task(s, run)
    elif run.route is Route.DATASET_MERGING:
        blocks, used = _dataset_merging(s, run)
    elif run.route is Route.PARALLEL_TRAINING:
        blocks, used = _parallel(s)
    return blocks + generic_blocks(s, SHOWN | used)


def generic_blocks(s: dict[str, Any], shown: set[str]) -> list[Block]:
    """Every summary entry not in ``shown``: plain values in one table, metric dicts in another,
    anything else as JSON."""
    facts, metric_rows, other = [], [], []
    for key, value in s.items():
        if key in shown or value is None or value in ({}, []):
            continue
        label = key.replace("_", " ")
        if isinstance(value, str | int | float | bool):
            facts.append([label, fmt(value)])
        elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            facts.append([label, ", ".join(fmt(v) for v in value)])
        elif isinstance(value, dict) and all(isinstance(v, int | float) for v in value.values()):
            metric_rows.append([label, ", ".join(
                f"{k} {fmt_values(seed_values(s, key, k))}" for k in value)])
        else:
            other.append(Code(json.dumps(value, indent=2, default=str), label))
    blocks: list[Block] = []
    if metric_rows:
        blocks.append(Table(["measured", "values"], metric_rows, id="route-metrics",
                            caption="Other measurements of this run (controls, references)."))
    if facts:
        blocks.append(Table(["setting or fact", "value"], facts, id="route-facts"))
    return blocks + other


# ------------------------------------------------------------------------ Domain Adaptation
def _domain_adaptation(run: RunData, tsne: bool) -> list[Block]:
    s = run.summary or {}
    blocks: list[Block] = []
    if s:
        uses = " (uses target validation labels)" if s.get("selection_uses_target_labels") else (
            " (label-free on the target)")
        share = s.get("target_labels") or 0
        labels = f"{share:.0%} of the target's training labels" if share else "no target labels"
        blocks.append(Text(f"Method **{s.get('method', '?')}**, checkpoint selection "
                           f"**{s.get('selection', '?')}**{uses}, trained with {labels}."))
    if run.features is None:
        return blocks + [Notice("No feature maps: features.npz is missing from the run folder "
                                "(a finished Domain Adaptation run saves it).")]
    start = time.perf_counter()
    png, facts = plots.feature_maps_png(run.features, tsne=tsne)
    seconds = time.perf_counter() - start
    counts = ", ".join(f"{k} from {n}" for n, k in facts["samples"].items())
    blocks.append(Text(
        "Trunk features of test samples (" + counts + "), coloured by domain, before adaptation "
        "(the source-only model) and after. Aligned domains overlap; separate clouds mean the "
        "trunk still tells the domains apart. Axes have no units (PCA: the two main directions "
        f"of variation; t-SNE: neighbourhoods). Drawn in {seconds:.1f} s."))
    blocks.append(Image("feature-maps.png", png, "PCA and t-SNE maps of source and target "
                        "features before and after adaptation", id="feature-maps",
                        width=460 * len(facts["states"])))
    return blocks


# ----------------------------------------------------------------------- Multi-Task Learning
def _multi_task(s: dict[str, Any], run: RunData) -> tuple[list[Block], set[str]]:
    per_task = s.get("per_task") or {}
    rows = []
    for task, metrics in per_task.items():
        for i, name in enumerate(metrics):
            mine = seed_values(s, "per_task", task, name)
            base = seed_values(s, "per_task_baseline", task, name)
            change, style = "-", ""
            if mine and base:
                diff = [a - b for a, b in zip(mine, base, strict=False)]
                signed = [d if higher_is_better(name) else -d for d in diff]
                change = fmt_values(signed, sign=True)
                style = "bad" if sum(signed) < 0 else "good"
            rows.append([task if i == 0 else "", name, Cell(fmt_values(mine), "strong"),
                         fmt_values(base), Cell(change, style if i == 0 else "")])
    blocks: list[Block] = [Table(
        ["task", "metric", "multi-task", "single-task baseline", "better by"], rows,
        id="per-task", caption="Test metrics per task; 'better by' is signed so that positive "
        "means the multi-task model is better.")]
    delta = seed_values(s, "delta_m")
    if delta:
        bad = sum(delta) < 0
        what = "multi-task learning hurt on average" if bad else "multi-task learning helped"
        blocks.append(Notice(
            f"**Δm = {fmt_values(delta, digits=2, sign=True)} %** ({what}): the mean relative "
            "change of each task's primary metric against its single-task baseline, signed so "
            "that positive is better." + (f" **{NEGATIVE}**." if bad else ""),
            "bad" if bad else "good"))
    if s.get("weighting"):
        blocks.append(Text(f"Task weighting: **{s['weighting']}**."))
    return blocks, {"per_task", "per_task_baseline", "delta_m", "weighting"}


# --------------------------------------------------------------------------- Dataset Merging
def _dataset_merging(s: dict[str, Any], run: RunData) -> tuple[list[Block], set[str]]:
    key = s["primary_metric"]
    base = s.get("per_source_baseline") or {}
    probs = (s.get("mixing") or {}).get("probabilities") or {}
    rows = []
    for source in s.get("per_source") or {}:
        mine = seed_values(s, "per_source", source, key)
        alone = seed_values(s, "per_source_baseline", source, key)
        gain, style = "-", ""
        if mine and alone:
            signed = [(a - b) * (1 if s.get("higher_is_better", True) else -1)
                      for a, b in zip(mine, alone, strict=False)]
            gain = fmt_values(signed, sign=True)
            style = "bad" if sum(signed) < 0 else "good"
            if sum(signed) < 0:
                gain += f" ({NEGATIVE})"
        share = f"{probs[source]:.0%}" if source in probs else ""
        rows.append([source, share, Cell(fmt_values(mine), "strong"),
                     fmt_values(alone) if base else "-", Cell(gain, style)])
    policy = (s.get("mixing") or {}).get("policy", "?")
    blocks: list[Block] = [Table(
        ["source", "share of batches", f"merged {key}", f"alone {key}", "gain"], rows,
        id="per-source", caption=f"Test {key} per source (mixing: {policy}); 'alone' is a model "
        "trained on that source only with the same budget.")]
    blocks += _leakage(s.get("leakage") or {}, run)
    if s.get("leakage_summary"):
        blocks.append(Code(s["leakage_summary"], "the leakage report as text"))
    return blocks, {"per_source", "per_source_baseline", "mixing", "leakage", "leakage_summary"}


def _leakage(leak: dict[str, Any], run: RunData) -> list[Block]:
    if not leak:
        return [Notice("No leakage report in the summary.", "info")]
    rows = []
    for scope in ("cross", "within"):
        for check in leak.get(scope) or []:
            pair = f"{check.get('train')}.train vs {check.get('other')}.{check.get('split')}"
            if check.get("skipped"):
                rows.append([scope, pair, "-", "-", "-", Cell(f"skipped: {check['skipped']}",
                                                              "muted")])
                continue
            n = check.get("n_train_samples", 0)
            rows.append([scope, pair, str(check.get("n_exact", 0)), str(check.get("n_near", 0)),
                         str(n), Cell("leaks" if n else "clean", "bad" if n else "good")])
    action = ((run.spec.get("recipe") or {}).get("deduplicate") or "report")
    done = ("the leaking training samples were **removed** before training (deduplicate: drop)"
            if action == "drop" else "duplicates were **reported only**; nothing was removed "
            "(deduplicate: report; set deduplicate: drop to remove leaking training samples)")
    threshold = leak.get("threshold")
    near = f"near: cosine of standardised inputs ≥ {threshold}" if threshold else "exact only"
    fate = "removed before training" if action == "drop" else "kept (reported only)"
    per_dataset = [[name, str(n.get("cross", 0)), str(n.get("within", 0)),
                    Cell(fate if n.get("all") else "-", "bad" if n.get("all") else "")]
                   for name, n in (leak.get("leaking_train") or {}).items()]
    return [
        Table(["scope", "train vs", "exact pairs", "near pairs", "train samples leaking",
               "verdict"], rows, id="leakage",
              caption=f"Leakage report ({near}; exact: equal to {leak.get('decimals')} "
              "decimals). 'cross': a dataset's train split against another's val/test."),
        Table(["dataset", "train samples in other datasets' val/test",
               "train samples in its own val/test", "those samples"], per_dataset,
              id="leaking-train"),
        Text(f"What was done: {done}."),
    ]


# ------------------------------------------------------------------------- Parallel Training
def _parallel(s: dict[str, Any]) -> tuple[list[Block], set[str]]:
    jobs = s.get("jobs") or {}
    compared = any("baseline_metrics" in job for job in jobs.values())
    rows = []
    for name, job in jobs.items():
        ok = job.get("status") == "ok"
        metric = job.get("primary_metric")
        value = (job.get("metrics") or {}).get(metric) if ok else None
        result = f"{metric} {fmt(value)}" if ok else (job.get("error") or "failed")
        row: list[str | Cell] = [
            Cell(name, "strong"), Cell(job.get("status", "?"), "good" if ok else "bad"),
            Cell(result, "" if ok else "bad"),
            f"{job['time_s']:.1f} s" if job.get("time_s") is not None else "-",
            s.get("backend", "?"), job.get("task") or "-", job.get("trunk") or "-",
            fmt(job.get("parameters"))]
        if compared:
            base = (job.get("baseline_metrics") or {}).get(metric)
            row += [fmt(base), fmt(job.get("gain"))]
        rows.append(row)
    columns = ["job", "status", "test metric / cause", "time", "backend", "task", "trunk",
               "parameters"] + (["one after another", "gain"] if compared else [])
    blocks: list[Block] = [Table(columns, rows, id="jobs",
                                 caption="Every job: its own data and model, nothing shared.")]
    backend = f"Backend **{s.get('backend', '?')}**"
    if s.get("backend_reason"):
        backend += f", because {s['backend_reason']}"
    blocks.append(Text(backend + "."))
    if s.get("wall_time_s") is not None:
        speedup = (f"; {s['speedup']:.2f}× faster than one after another"
                   if isinstance(s.get("speedup"), int | float) else "")
        blocks.append(Text(f"Wall time of all jobs together: {s['wall_time_s']:.1f} s"
                           f"{speedup}."))
    return blocks, {"jobs", "failed", "backend", "backend_reason", "wall_time_s", "speedup"}
