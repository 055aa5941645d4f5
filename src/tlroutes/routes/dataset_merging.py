"""Dataset Merging: two or more datasets of one task and one domain, one model, trained at once.

Same task, same domain, simultaneously (ImageNet + scraped images → one better classifier).

Recipe:
1. Load the problems; harmonise their label sets through ``label_map`` (a CSV/TSV of
   ``dataset, label, merged``; an unmapped label is an error), or require identical label sets.
2. Look for exact and near duplicates across the datasets; the leakage report (a train sample of
   one dataset that is also in another's validation or test split) goes into the summary, and
   ``deduplicate: drop`` removes the leaking training samples.
3. ``merged``: one model on batches mixed from every dataset (``mixing``: proportional,
   balanced, or temperature with a cap); selection on the pooled validation splits.
4. Baselines: one model per dataset, trained alone with the same epochs. Every sample keeps its
   source, so metrics are reported per source as well as pooled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from tlroutes.config import RunSpec
from tlroutes.data.merging import leakage_report, load_label_map
from tlroutes.data.mixing import MixedStream
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.objectives.tasks import primary_metric
from tlroutes.problem import Split
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block, Cell, Code, Notice, Table, Text
from tlroutes.reporting.tables import NEGATIVE, fmt_values, seed_values
from tlroutes.routes.common import RecipeSpec, mean_of, require_same_cell, summarise
from tlroutes.routes.registry import Advice, RouteProse, Sharing
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer
from tlroutes.train.from_spec import build, evaluate, load, stage, supervised_stage
from tlroutes.train.seeding import derive_seed
from tlroutes.train.steps import SupervisedStep

if TYPE_CHECKING:
    from tlroutes.measure.evidence import Evidence
    from tlroutes.problem import Problem

ROUTE = Route.DATASET_MERGING

BALANCE_ABOVE = 2.0
"""Ratio of the largest to the smallest training set above which the plan samples equally."""


class Recipe(RecipeSpec):
    """Dataset Merging settings (the run file's ``recipe:`` block)."""

    label_map: str | None = Field(
        None, description="CSV/TSV file with columns dataset, label, merged (merged = DROP drops "
        "the label). Default: the datasets must share one label set.",
    )
    mixing: Literal["proportional", "balanced", "temperature"] = Field(
        "proportional", description="How batches mix the datasets: in proportion to their size "
        "(default), equally, or ∝ size^(1/temperature).",
    )
    temperature: float | None = Field(
        None, gt=0, description="For mixing 'temperature'. Default: none (required there).",
    )
    cap: float | None = Field(
        None, gt=0, le=1, description="Largest share any dataset may take of a batch. "
        "Default: no cap.",
    )
    deduplicate: Literal["report", "drop"] = Field(
        "report", description="'report' (default) lists duplicates and leaks; 'drop' also "
        "removes leaking training samples before training.",
    )
    threshold: float = Field(
        0.99, gt=0, le=1, description="Near-duplicate threshold on the correlation of two "
        "samples. Default 0.99.",
    )


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Run the recipe; returns the summary (see :func:`tlroutes.routes.common.summarise`)."""
    if len(spec.problems) < 2:
        raise ConfigError("Dataset Merging needs at least two datasets under `problems:`, e.g. "
                          "problems: {a: {dataset: digits}, b: {dataset: my.npz}}.")
    problems = {name: load(d, spec.seed, name) for name, d in spec.problems.items()}
    if recipe.label_map:
        problems = load_label_map(recipe.label_map, datasets=list(problems)).apply_all(problems)
    require_same_cell(ROUTE, problems)
    labels = {name: p.task.labels for name, p in problems.items()}
    if len(set(labels.values())) > 1:
        raise ConfigError(
            f"The datasets' label sets differ ({labels}); give recipe.label_map, a CSV with "
            "columns dataset,label,merged that maps each dataset's labels to one merged set."
        )
    report = leakage_report(problems, threshold=recipe.threshold, drop=recipe.deduplicate == "drop")
    if recipe.deduplicate == "drop":
        problems = report.cleaned
    first = next(iter(problems.values()))
    task, t = first.task, spec.training
    pooled_val = _pool([p.val for p in problems.values()])

    trainer.seed_for("model")
    model = build(spec.model, {"input": first.domain}, {"task": task})
    mixed = MixedStream({n: p.train for n, p in problems.items()}, t.batch_size,
                        policy=recipe.mixing, temperature=recipe.temperature, cap=recipe.cap,
                        seed=derive_seed(spec.seed, "merged"), name="merged")
    trainer.fit(stage("merged", SupervisedStep(model, task), {"train": mixed},
                      lambda: evaluate(model, pooled_val, task), task, t))
    trainer.save_model(model)
    per_source = {n: evaluate(model, p.test, task) for n, p in problems.items()}
    metrics = {"pooled": evaluate(model, _pool([p.test for p in problems.values()]), task),
               **per_source}

    baseline = None
    if spec.baseline:
        baseline = {}
        for name, problem in problems.items():
            trainer.seed_for("baseline", name)
            alone = build(spec.model, {"input": first.domain}, {"task": task}, fresh=True)
            trainer.fit(supervised_stage(f"alone-{name}", alone, problem, t, spec.seed))
            baseline[name] = evaluate(alone, problem.test, task)
    key, higher = primary_metric(task)
    mean = {key: mean_of(per_source, key)}
    summary = summarise(ROUTE, task, mean, None if baseline is None else
                        {key: mean_of(baseline, key)},
                        carried_over="one stem, trunk and head for all datasets",
                        per_source=metrics, per_source_baseline=baseline,
                        mixing={"policy": recipe.mixing,
                                "probabilities": dict(zip(problems, list(mixed.probabilities),
                                                          strict=True))},
                        leakage=report.to_dict(), leakage_summary=report.summary(),
                        metric_note=(f"metrics and baseline: the mean over sources of each "
                                     f"source's test {key}; per_source holds each source and "
                                     "the pooled test set"))
    return summary


def _pool(splits: list[Split]) -> Split:
    return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


# --------------------------------------------------------------------------------------------------
# Prose and advice (what `tlroutes routes --explain`, the report and `tlroutes plan` say)
# --------------------------------------------------------------------------------------------------

PROSE = RouteProse(
    "Train on two datasets of the same task and domain at once, as if they were one larger "
    "dataset.",
    example="ImageNet + scraped images",
    sharing=Sharing(stems="one, shared", trunk="shared",
                    heads="one, shared", stages="one joint stage"),
)


def recommend(problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> Advice:
    """The plan's advice: balanced or proportional mixing by the training sizes;
    drop duplicates."""
    sizes = [len(p.train) for p in problems.values()]
    balanced = max(sizes) > BALANCE_ABOVE * min(sizes)
    recipe: dict[str, Any] = {"mixing": "balanced" if balanced else "proportional",
                              "deduplicate": "drop"}
    why = {
        "mixing": f"Training sizes {sizes}: " + (
            f"more than {BALANCE_ABOVE:g}× apart, so sample the datasets equally." if balanced
            else f"within {BALANCE_ABOVE:g}×, so sample in proportion."),
        "deduplicate": "Near-duplicates across datasets leak test samples into training.",
    }
    return recipe, why


# --------------------------------------------------------------------------------------------------
# Report (the report's route section; see tlroutes.routes.registry for the protocol)
# --------------------------------------------------------------------------------------------------


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """The report's route section: each source merged against alone, and the leakage report."""
    s = run.summary
    if s is None:
        return details_blocks(run)
    key = s.primary_metric
    base = s.details.get("per_source_baseline") or {}
    mixing = s.details.get("mixing") or {}
    probs = mixing.get("probabilities") or {}
    rows = []
    for source in s.details.get("per_source") or {}:
        mine = seed_values(s, "per_source", source, key)
        alone = seed_values(s, "per_source_baseline", source, key)
        gain, style = "-", ""
        if mine and alone:
            signed = [(a - b) * (1 if s.higher_is_better else -1)
                      for a, b in zip(mine, alone, strict=False)]
            gain = fmt_values(signed, sign=True)
            style = "bad" if sum(signed) < 0 else "good"
            if sum(signed) < 0:
                gain += f" ({NEGATIVE})"
        share = f"{probs[source]:.0%}" if source in probs else ""
        rows.append([source, share, Cell(fmt_values(mine), "strong"),
                     fmt_values(alone) if base else "-", Cell(gain, style)])
    blocks: list[Block] = [Table(
        ["source", "share of batches", f"merged {key}", f"alone {key}", "gain"], rows,
        id="per-source", caption=f"Test {key} per source (mixing: {mixing.get('policy', '?')}); "
        "'alone' is a model trained on that source only with the same budget.")]
    blocks += _leakage_blocks(s.details.get("leakage") or {}, run)
    if s.details.get("leakage_summary"):
        blocks.append(Code(s.details["leakage_summary"], "the leakage report as text"))
    return blocks + details_blocks(run, shown={"per_source", "per_source_baseline", "mixing",
                                               "leakage", "leakage_summary"})


def _leakage_blocks(leak: dict[str, Any], run: RunData) -> list[Block]:
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
    action = (run.spec.get("recipe") or {}).get("deduplicate") or "report"
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


#: The run file's top-level blocks this route reads besides those every run reads (route, order,
#: constraints, seed, seeds, recipe, hardware, tracking); another one set is refused at resolve.
RUN_FILE_BLOCKS: frozenset[str] = frozenset({"problems", "model", "training", "baseline"})
