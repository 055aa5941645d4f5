"""The report assembly: title, notices, the cube, the metrics table, the curves, the route's own
section and the run file.

This module sits above the routes (DESIGN, "Layers only look down"): the route's prose and its
own section come from its module, found through the route registry; everything else here is
the same for every route.
"""

from __future__ import annotations

from types import ModuleType

from tlroutes.reporting import plots
from tlroutes.reporting.collect import RunData, collect
from tlroutes.reporting.document import Cell, Code, Document, Image, Notice, Section, Table, Text
from tlroutes.reporting.tables import NEGATIVE, fmt, fmt_spread, fmt_values, gain_text, seed_values
from tlroutes.routes.registry import get_route, prose_of, title_of
from tlroutes.runfolder.failure import read_failure
from tlroutes.summary import Summary


def read_run(run_dir) -> tuple[RunData, ModuleType]:
    """Read a run folder and find its route's module (which names the files it also needs).

    Raises:
        ConfigError: not a run folder, damaged files, or a route that is not registered.
    """
    run = collect(run_dir, route_of=lambda name: get_route(name).ROUTE)
    module = get_route(run.name)
    run.expect(getattr(module, "REPORT_FILES", {}))
    return run, module


def build_document(run: RunData, module: ModuleType, *, tsne: bool = True) -> Document:
    """The whole report of ``run``, whose route is ``module``.

    Args:
        run: what the run folder holds.
        module: the route's module (its prose and its ``report_blocks``).
        tsne: passed to the route's ``report_blocks`` (t-SNE maps for Domain Adaptation).
            Default True.
    """
    s = run.summary
    title = title_of(module)
    subtitle = f"run folder: {run.folder}"
    if s and s.source and s.target:
        subtitle += f" · {s.source} → {s.target}"
    if run.seeds > 1:
        subtitle += f" · {run.seeds} seeds"
    doc = Document(f"{title}: run report", subtitle)
    failure = read_failure(run.folder)
    if failure is not None:
        advice = ("`tlroutes run … --resume` continues it" if failure.resumable else
                  "a resume would stop the same way: change the run file or the data and start "
                  "a new run folder")
        doc.notices.append(Notice(f"**The run stopped on {failure.error}**: {failure.message} "
                                  f"({advice}).", "bad"))
    for name, why in run.missing.items():
        label = "unfinished: missing" if name == "summary.json" else "missing"
        doc.notices.append(Notice(f"**{label} {name}** ({why})."))
    if s is not None:
        doc.notices.extend(_label_notices(s))
    doc.sections = [
        _cube(run, module),
        _metrics(run),
        _curves(run),
        Section("route-details", f"{title}: details", module.report_blocks(run, tsne=tsne)),
        Section("run-file", "Run file", [Code(run.run_text, "run.yaml (the resolved run file)")]),
    ]
    return doc


def _label_notices(s: Summary) -> list[Notice]:
    """A warning when target classes have no source sample (``details["labels"]``, the label
    relation of the classes present that the runner or the route records): a model trained on
    the source has never seen them, and the target's accuracy on them says nothing of transfer.
    """
    labels = s.details.get("labels")
    if not isinstance(labels, dict):
        return []
    missing = [str(n) for n in labels.get("target_only") or []]
    if not missing:
        return []
    shown = ", ".join(missing[:8]) + (f" … ({len(missing)} in all)" if len(missing) > 8 else "")
    counts = labels.get("target_counts") or {}
    samples = sum(int(counts.get(n, 0)) for n in missing)
    return [Notice(
        f"**Target classes with no source sample**: {shown} ({samples} target sample(s)). A "
        "model trained on the source has never seen these classes; what it does on them comes "
        "from the target's own labels, not from transfer, and without target labels it cannot "
        "predict them (open-set adaptation flags them as unknown).")]


def _cube(run: RunData, module: ModuleType) -> Section:
    route = run.route
    # The route module's own prose; a plug-in without it borrows its cube cell's.
    prose = prose_of(module)
    rows: list[list[str | Cell]] = [[part, words] for part, words in prose.sharing.rows()]
    if run.summary is not None and run.summary.carried_over:
        rows.append([Cell("this run carried over / shared", "strong"),
                     Cell(run.summary.carried_over, "strong")])
    return Section("cube", "The route", [
        Image("cube.png", plots.cube_png(route), f"the eight routes, {route.title} highlighted",
              id="cube-picture", width=720),
        Text(f"**{title_of(module)}** (task {route.task}, domain {route.domain}, "
             f"{route.order}): {prose.explanation}"),
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
    if not s.metrics:
        # an unlabelled target (Domain Adaptation) is never scored from placeholder targets
        section.blocks.append(Notice("Target metrics unavailable: "
                                     f"{s.metric_note or 'the run measured none.'}", "info"))
        return section
    section.blocks.append(_verdict(s))
    section.blocks.append(_metrics_table(s))
    if s.also:
        section.blocks.append(Table(
            ["also measured", s.primary_metric],
            [[k.replace("_", " "), fmt_values(seed_values(s, "also", k))] for k in s.also],
            id="also", caption="Other comparisons the run measured (controls, other baselines)."))
    for note, label in ((s.metric_note, "Metrics"), (s.baseline_note, "Baseline")):
        if note:
            section.blocks.append(Text(f"**{label}**: {note}"))
    if s.per_seed:
        section.blocks.append(_per_seed_table(s))
    return section


def _verdict(s: Summary) -> Notice:
    """The gain in words: helped, or negative transfer (named, not only a minus sign)."""
    name, gain = s.primary_metric, s.gain
    kind = (s.baseline_kind or "").replace("_", " ")
    against = f"the {kind} baseline" if kind else "the baseline"
    if gain is None:
        return Notice(f"No gain: this run has no baseline for {name}.", "info")
    spread = " (mean ± std over seeds)" if s.gain_std is not None else ""
    size = fmt_spread(abs(gain), s.gain_std)
    if s.negative_transfer:
        every = ", in every seed" if s.negative_transfer_consistent else ""
        worse = "lower" if s.higher_is_better else "higher"
        return Notice(f"**{NEGATIVE.upper()}**: transfer is worse than {against}: {size} "
                      f"{worse} {name}{spread}{every}.", "bad")
    better = "higher" if s.higher_is_better else "lower"
    return Notice(f"**Transfer helped**: {size} {better} {name} than {against}{spread}; "
                  f"gain {fmt_spread(gain, s.gain_std, sign=True)}.", "good")


def _metrics_table(s: Summary) -> Table:
    base = s.baseline or {}
    kind = s.baseline_kind or ""
    others = [k for k, v in s.baselines.items() if v is not None and k != kind]
    label = kind.replace("_", " ")
    columns = ["metric", "transfer", f"baseline ({label})" if kind else "baseline",
               *[k.replace("_", " ") for k in others], "gain"]
    rows = []
    for name, value in s.metrics.items():
        std = (s.metrics_std or {}).get(name)
        shown = fmt_spread(value, std)
        if name.startswith("jobs_") and std is None:  # counts (Parallel Training), not scores
            shown = fmt(int(value))
        row: list[str | Cell] = [name, Cell(shown, "strong")]
        row.append(fmt_spread(base[name], (s.baseline_std or {}).get(name))
                   if name in base else "-")
        row += [fmt_values(seed_values(s, "baselines", k, name)) for k in others]
        if name == s.primary_metric and s.gain is not None:
            row.append(Cell(gain_text(s), "bad" if s.negative_transfer else "good"))
        else:
            row.append("")
        rows.append(row)
    caption = "On the test split." + (
        " Mean ± sample standard deviation over seeds." if s.per_seed else "")
    return Table(columns, rows, id="metrics-table", caption=caption)


def _per_seed_table(s: Summary) -> Table:
    name = s.primary_metric
    rows = []
    for one in s.per_seed:
        label = f"{one.gain:+.3f}" if one.gain is not None else "-"
        if one.negative_transfer:
            label += f" ({NEGATIVE})"
        rows.append([str(one.seed if one.seed is not None else ""),
                     fmt(one.metrics.get(name)), fmt((one.baseline or {}).get(name)),
                     Cell(label, "bad" if one.negative_transfer else "")])
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
