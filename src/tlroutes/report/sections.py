"""What every report has: title, notices, the cube, the metrics table, the curves, the run file.

The route's own part is :mod:`tlroutes.report.route_sections`.
"""

from __future__ import annotations

from typing import Any

from tlroutes.report import plots
from tlroutes.report.collect import RunData
from tlroutes.report.document import Cell, Code, Document, Image, Notice, Section, Table, Text
from tlroutes.report.route_sections import route_details
from tlroutes.report.tables import NEGATIVE, fmt, fmt_spread, fmt_values, gain_text, seed_values

SHARING_PARTS = ("stems", "trunk", "heads", "stages")


def build_document(run: RunData, tsne: bool = True) -> Document:
    """The whole report of ``run``; ``tsne`` adds t-SNE maps to Domain Adaptation (default)."""
    s = run.summary
    subtitle = f"run folder: {run.folder}"
    if s and s.get("source") and s.get("target"):
        subtitle += f" · {s['source']} → {s['target']}"
    if run.seeds > 1:
        subtitle += f" · {run.seeds} seeds"
    doc = Document(f"{run.route.title}: run report", subtitle)
    for name, why in run.missing.items():
        label = "unfinished: missing" if name == "summary.json" else "missing"
        doc.notices.append(Notice(f"**{label} {name}** ({why})."))
    doc.sections = [
        _cube(run),
        _metrics(run),
        _curves(run),
        Section("route-details", f"{run.route.title}: details", route_details(run, tsne)),
        Section("run-file", "Run file", [Code(run.run_text, "run.yaml (the resolved run file)")]),
    ]
    return doc


def _cube(run: RunData) -> Section:
    route = run.route
    sharing = route.sharing
    rows = [[part, sharing.get(part, "-")] for part in SHARING_PARTS]
    carried = (run.summary or {}).get("carried_over")
    if carried:
        rows.append([Cell("this run carried over / shared", "strong"), Cell(carried, "strong")])
    return Section("cube", "The route", [
        Image("cube.png", plots.cube_png(route), f"the eight routes, {route.title} highlighted",
              id="cube-picture", width=720),
        Text(f"**{route.title}** (task {route.task}, domain {route.domain}, {route.order}): "
             f"{route.explanation}"),
        Table(["part", "what the two problems share"], rows, id="sharing"),
    ])


def _metrics(run: RunData) -> Section:
    s = run.summary
    section = Section("metrics", "Test metrics against the baseline")
    if s is None:
        section.blocks.append(Notice("No test metrics: the run has not finished (no "
                                     "summary.json). The learning curves below show the epochs "
                                     "that did finish."))
        return section
    section.blocks.append(_verdict(s))
    section.blocks.append(_metrics_table(s))
    if s.get("also"):
        section.blocks.append(Table(
            ["also measured", s["primary_metric"]],
            [[k.replace("_", " "), fmt_values(seed_values(s, "also", k))] for k in s["also"]],
            id="also", caption="Other comparisons the run measured (controls, other baselines)."))
    for key, label in (("metric_note", "Metrics"), ("baseline_note", "Baseline")):
        if s.get(key):
            section.blocks.append(Text(f"**{label}**: {s[key]}"))
    if s.get("per_seed"):
        section.blocks.append(_per_seed_table(s))
    return section


def _verdict(s: dict[str, Any]) -> Notice:
    """The gain in words: helped, or negative transfer (named, not only a minus sign)."""
    name, gain = s["primary_metric"], s.get("gain")
    kind = s.get("baseline_kind", "").replace("_", " ")
    against = f"the {kind} baseline" if kind else "the baseline"
    if gain is None:
        return Notice(f"No gain: this run has no baseline for {name}.", "info")
    spread = " (mean ± std over seeds)" if s.get("gain_std") is not None else ""
    higher = s.get("higher_is_better", True)
    size = fmt_spread(abs(gain), s.get("gain_std"))
    if s.get("negative_transfer"):
        every = ", in every seed" if s.get("negative_transfer_consistent") else ""
        worse = "lower" if higher else "higher"
        return Notice(f"**{NEGATIVE.upper()}**: transfer is worse than {against}: {size} "
                      f"{worse} {name}{spread}{every}.", "bad")
    better = "higher" if higher else "lower"
    return Notice(f"**Transfer helped**: {size} {better} {name} than {against}{spread}; "
                  f"gain {fmt_spread(gain, s.get('gain_std'), sign=True)}.", "good")


def _metrics_table(s: dict[str, Any]) -> Table:
    base = s.get("baseline") or {}
    kind = s.get("baseline_kind", "")
    others = {k: v for k, v in (s.get("baselines") or {}).items()
              if isinstance(v, dict) and k != kind}
    label = kind.replace("_", " ")
    columns = ["metric", "transfer", f"baseline ({label})" if kind else "baseline",
               *[f"{k.replace('_', ' ')}" for k in others], "gain"]
    rows = []
    for name, value in (s.get("metrics") or {}).items():
        std = (s.get("metrics_std") or {}).get(name)
        shown = fmt_spread(value, std)
        if name.startswith("jobs_") and std is None:  # counts (Parallel Training), not scores
            shown = fmt(int(value))
        row: list[str | Cell] = [name, Cell(shown, "strong")]
        row.append(fmt_spread(base[name], (s.get("baseline_std") or {}).get(name))
                   if name in base else "-")
        row += [fmt_values(seed_values(s, "baselines", k, name)) for k in others]
        if name == s["primary_metric"] and s.get("gain") is not None:
            row.append(Cell(gain_text(s), "bad" if s.get("negative_transfer") else "good"))
        else:
            row.append("")
        rows.append(row)
    caption = "On the test split." + (
        " Mean ± sample standard deviation over seeds." if s.get("per_seed") else "")
    return Table(columns, rows, id="metrics-table", caption=caption)


def _per_seed_table(s: dict[str, Any]) -> Table:
    name = s["primary_metric"]
    rows = []
    for one in s["per_seed"]:
        gain = one.get("gain")
        label = f"{gain:+.3f}" if gain is not None else "-"
        if one.get("negative_transfer"):
            label += f" ({NEGATIVE})"
        rows.append([str(one.get("seed", "")), fmt((one.get("metrics") or {}).get(name)),
                     fmt((one.get("baseline") or {}).get(name)),
                     Cell(label, "bad" if one.get("negative_transfer") else "")])
    return Table(["seed", f"transfer {name}", f"baseline {name}", "gain"], rows, id="per-seed",
                 caption="Each seed's own run (in seed-<s>/).")


def _curves(run: RunData) -> Section:
    section = Section("curves", "Learning curves")
    if not run.curves:
        section.blocks.append(Notice("No learning curves: metrics.jsonl holds no finished "
                                     "epoch yet."))
        return section
    stages = list(dict.fromkeys(r["stage"] for lines in run.curves.values() for r in lines))
    whose = f" (of {next(iter(run.curves))})" if len(run.curves) > 1 else ""
    section.blocks.append(Text(
        "One figure per training stage, one panel per logged quantity: train (dashed, mean "
        "over the epoch) and validation (solid); the dotted line marks the epoch the stage "
        f"selected{whose}."))
    for i, stage in enumerate(stages):
        by_seed = {label: [r for r in lines if r["stage"] == stage]
                   for label, lines in run.curves.items()}
        png, width, left = plots.curves_png(by_seed, stage, run.best_epochs.get(stage))
        section.blocks.append(Image(f"curves-{i + 1}-{_safe(stage)}.png", png,
                                    f"learning curves of stage {stage}", width=width))
        if left:
            section.blocks.append(Text(f"Not drawn for stage {stage}: {', '.join(left)}."))
    return section


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
