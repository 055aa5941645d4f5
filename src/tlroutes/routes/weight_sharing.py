"""Weight Sharing: one task on several domains at once, through a shared representation.

Same task, different domains, simultaneously (OCR text + page image → one page classifier).

Recipe:
1. Load the problems: one task (identical label sets), one domain each.
2. ``shared``: one stem per domain (optionally ending in the domain's own normalisation), one
   shared trunk and one shared head; every step draws a batch from each domain's stream, and the
   domain is passed explicitly to the model (``model(x, stem=domain)``), never held as state.
3. Baselines: a separate model per domain, trained alone with the same epochs; and, when every
   domain has the same input shape, one model on the pooled data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import Tensor, nn

from tlroutes.config import RunSpec
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.model import TransferModel, build_model
from tlroutes.objectives.tasks import primary_metric, task_loss
from tlroutes.problem import Problem, Split, Task
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block
from tlroutes.routes.common import RecipeSpec, mean_of, require_same_cell, summarise
from tlroutes.routes.registry import Advice, RouteProse, Sharing
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer
from tlroutes.train.from_spec import build, evaluate, load, stage, stream, supervised_stage

if TYPE_CHECKING:
    from tlroutes.measure.evidence import Evidence

ROUTE = Route.WEIGHT_SHARING


class Recipe(RecipeSpec):
    """Weight Sharing settings (the run file's ``recipe:`` block)."""

    domain_norm: bool = Field(
        False, description="End each domain's stem with a normalisation of its own "
        "(batch norm over the stem's output channels), so that each domain's statistics are "
        "kept apart before the shared trunk. Default false.",
    )
    pooled_baseline: bool = Field(
        True, description="Also train one model on the pooled data of all domains, when their "
        "input shapes agree. Default true.",
    )


class SharedStep(nn.Module):
    """The mean over domains of the shared head's task loss on each domain's batch."""

    def __init__(self, model: TransferModel, task: Task, domains: list[str]) -> None:
        super().__init__()
        self.model, self.task, self.domains = model, task, domains

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]):
        losses = {d: task_loss(self.task, self.model(batch[d][0], stem=d), batch[d][1])
                  for d in self.domains}
        total = sum(losses.values()) / len(losses)
        return total, {f"loss_{d}": v for d, v in losses.items()}


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Run the recipe; returns the summary (see :func:`tlroutes.routes.common.summarise`)."""
    if len(spec.problems) < 2:
        raise ConfigError("Weight Sharing needs at least two domains under `problems:`, e.g. "
                          "problems: {images: {dataset: digits}, signals: {dataset: mnist1d}}.")
    problems = {name: load(d, spec.seed, name) for name, d in spec.problems.items()}
    require_same_cell(ROUTE, problems)
    labels = {name: p.task.labels for name, p in problems.items()}
    if len(set(labels.values())) > 1:
        raise ConfigError(
            f"Weight Sharing trains one head for every domain, but the label sets differ: "
            f"{labels}. Keep the same classes in every problem (e.g. `classes:`), or, for "
            "different tasks on different domains, use parallel_training."
        )
    task, t = next(iter(problems.values())).task, spec.training
    names = list(problems)

    trainer.seed_for("model")
    model = _shared_model(spec, problems, task, recipe.domain_norm)
    streams = {d: stream(p.train, t, spec.seed, f"shared-{d}") for d, p in problems.items()}
    trainer.fit(stage("shared", SharedStep(model, task, names), streams,
                      lambda: _mean_metrics(model, problems, task, "val"), task, t))
    trainer.save_model(model)
    per_domain = {d: evaluate(model, p.test, task, stem=d) for d, p in problems.items()}

    baseline, also = None, {}
    if spec.baseline:
        baseline = {}
        for d, problem in problems.items():
            trainer.seed_for("baseline", d)
            alone = build(spec.model, {"input": problem.domain}, {"task": task}, fresh=True)
            trainer.fit(supervised_stage(f"alone-{d}", alone, problem, t, spec.seed))
            baseline[d] = evaluate(alone, problem.test, task)
        pooled = _pooled(problems)
        if recipe.pooled_baseline and pooled is not None:
            trainer.seed_for("pooled-model")
            one = build(spec.model, {"input": pooled.domain}, {"task": task}, fresh=True)
            trainer.fit(supervised_stage("pooled", one, pooled, t, spec.seed))
            also["pooled"] = {d: evaluate(one, p.test, task) for d, p in problems.items()}
    key, _ = primary_metric(task)
    summary = summarise(
        ROUTE, task, {key: mean_of(per_domain, key)},
        None if baseline is None else {key: mean_of(baseline, key)},
        carried_over="trunk and head shared; one stem per domain",
        per_domain=per_domain, per_domain_baseline=baseline,
        pooled_baseline=also.get("pooled"), domain_norm=recipe.domain_norm,
        metric_note=(f"metrics and baseline: the mean over domains of each domain's test {key}; "
                     "per_domain holds each domain"),
    )
    if "pooled" in also:
        summary.also["one model, pooled data"] = mean_of(also["pooled"], key)
    return summary


def _shared_model(spec: RunSpec, problems: dict[str, Problem], task: Task,
                  domain_norm: bool) -> TransferModel:
    m = spec.model
    model = build_model({d: p.domain for d, p in problems.items()}, {"task": task}, m.trunk,
                        m.trunk_args, m.stem, m.stem_args)
    if domain_norm:
        for d, p in problems.items():
            channels = int(model.trunk.in_width)
            norm = nn.BatchNorm2d(channels) if model.trunk.input_kind == "image" else (
                nn.BatchNorm1d(channels))
            model.add_stem(d, _Normalised(model.stems[d], norm, tokens=_is_tokens(model)),
                           p.domain, replace=True)
    return model


class _Normalised(nn.Module):
    """A stem followed by its domain's own normalisation."""

    def __init__(self, stem: nn.Module, norm: nn.Module, tokens: bool) -> None:
        super().__init__()
        self.stem, self.norm, self.tokens = stem, norm, tokens

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        if self.tokens:  # (B, T, C): normalise channels
            return self.norm(h.transpose(1, 2)).transpose(1, 2)
        return self.norm(h)


def _is_tokens(model: TransferModel) -> bool:
    return model.trunk.input_kind == "tokens"


def _mean_metrics(model, problems, task, split) -> dict[str, float]:
    per = {d: evaluate(model, getattr(p, split), task, stem=d) for d, p in problems.items()}
    return {k: sum(m[k] for m in per.values()) / len(per) for k in next(iter(per.values()))}


def _pooled(problems: dict[str, Problem]) -> Problem | None:
    shapes = {p.domain.input_shape for p in problems.values()}
    if len(shapes) > 1:
        return None
    first = next(iter(problems.values()))
    splits = [Split(torch.cat([getattr(p, s).x for p in problems.values()]),
                    torch.cat([getattr(p, s).y for p in problems.values()]))
              for s in ("train", "val", "test")]
    return Problem("pooled", first.task, first.domain, *splits)


# --------------------------------------------------------------------------------------------------
# Prose and advice (what `tlroutes routes --explain`, the report and `tlroutes plan` say)
# --------------------------------------------------------------------------------------------------

PROSE = RouteProse(
    "Learn the same task on two domains or modalities at once: one stem per domain maps into a "
    "shared intermediate representation that one trunk and one head use.",
    example="OCR text + page image → one page classifier",
    sharing=Sharing(stems="one per domain", trunk="shared",
                    heads="one, shared", stages="one joint stage"),
)


def recommend(problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> Advice:
    """The plan's advice: per-domain normalisation."""
    return {"domain_norm": True}, {
        "domain_norm": "Per-domain normalisation absorbs the domains' different statistics."}


# --------------------------------------------------------------------------------------------------
# Report (the report's route section; see tlroutes.routes.registry for the protocol)
# --------------------------------------------------------------------------------------------------


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """The report's route section: the run's settings and extra measurements
    (per-domain metrics and baselines)."""
    return details_blocks(run)


#: The run file's top-level blocks this route reads besides those every run reads (route, order,
#: constraints, seed, seeds, recipe, hardware, tracking); another one set is refused at resolve.
RUN_FILE_BLOCKS: frozenset[str] = frozenset({"problems", "model", "training", "baseline"})
