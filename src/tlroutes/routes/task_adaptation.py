"""Task Adaptation: the carried-over trunk as a feature extractor for a new kind of task.

Different task kind, same domain, one after the other (a classifier's backbone + a new network
for localisation).

Recipe:
1. ``source``: train on the source task (skipped when ``source: null``: the pretrained trunk is
   the source).
2. Freeze stem and trunk; give the target task a new head (a small network when
   ``head_hidden`` > 0).
3. ``probe``: train the head. While the trunk is frozen its features are computed once and
   cached (``cache_features``), so each epoch costs only the head's work.
4. ``finetune`` (optional, LP-FT; Kumar et al., ICLR 2022): unfreeze everything and train on at
   a small learning rate, starting from the trained head.
5. ``baseline``: the same architecture from scratch on the target, with the probe's and the
   fine-tuning's epochs together.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field

from tlroutes.backbones import create_head
from tlroutes.config import RunSpec
from tlroutes.matrix import Route
from tlroutes.model import count_parameters, freeze, unfreeze
from tlroutes.objectives.tasks import task_metrics
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block
from tlroutes.routes.common import RecipeSpec, load_pair, pretrain, scratch_baseline, summarise
from tlroutes.routes.registry import Advice, RouteProse, Sharing
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer, evaluate_split
from tlroutes.train.features import cache_features
from tlroutes.train.from_spec import evaluate, stage, stream, supervised_stage
from tlroutes.train.steps import HeadStep

if TYPE_CHECKING:
    from torch import nn

    from tlroutes.measure.evidence import Evidence
    from tlroutes.problem import Problem, Split, Task

ROUTE = Route.TASK_ADAPTATION


class Recipe(RecipeSpec):
    """Task Adaptation settings (the run file's ``recipe:`` block)."""

    head_hidden: int = Field(
        128, ge=0, description="Hidden width of the new task's head (a small network); 0 makes "
        "it linear. Default 128.",
    )
    cache_features: bool = Field(
        True, description="Compute the frozen trunk's features once and train the head on them. "
        "Default true.",
    )
    finetune_epochs: int = Field(
        0, ge=0, description="After the probe, fine-tune everything for this many epochs "
        "(LP-FT); 0 (default) keeps the trunk frozen.",
    )
    finetune_lr: float = Field(1e-4, gt=0, description="Learning rate of the fine-tuning. "
                               "Default 1e-4.")


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Run the recipe; returns the summary (see :func:`tlroutes.routes.common.summarise`)."""
    source, target = load_pair(ROUTE, spec)
    model = pretrain(spec, trainer, source, target)

    trainer.seed_for("target-head")
    head_args = {"hidden": recipe.head_hidden} if recipe.head_hidden else {}
    model.add_head("target", create_head(target.task, model.trunk.out_dim, **head_args),
                   target.task)
    model.remove_head("source")
    freeze(model, parts=["stems", "trunk"])
    t = spec.target_training
    if recipe.cache_features:
        # in the run's dtype ("64-true", "bf16-true") before the features are computed: without
        # a source stage nothing has trained (and so cast) the frozen trunk yet
        trainer.prepare(model)
        # At the training batch size: larger passes were memory-bound and slower on CPU
        # (benchmarks/RESULTS.md, "Feature cache").
        # Features too large for memory go to the run folder (read back through a memory map).
        train, val = (cache_features(model, s, batch_size=t.batch_size, name=name,
                                     folder=trainer.run_dir / "features")
                      for name, s in (("train", target.train), ("val", target.val)))
        head = model.heads["target"]
        trainer.fit(stage(
            "probe", HeadStep(head, target.task), {"train": stream(train, t, spec.seed, "probe")},
            lambda: _head_metrics(head, val, target.task), target.task, t))
    else:
        trainer.fit(supervised_stage("probe", model, target, t, spec.seed, head="target",
                                     eval_modules=[model.stems, model.trunk]))
    frozen_metrics = evaluate(model, target.test, target.task, head="target")
    metrics = frozen_metrics
    if recipe.finetune_epochs:
        unfreeze(model, parts=["stems", "trunk"])
        trainer.fit(supervised_stage("finetune", model, target, t, spec.seed, head="target",
                                     epochs=recipe.finetune_epochs, lr=recipe.finetune_lr))
        metrics = evaluate(model, target.test, target.task, head="target")

    trainer.save_model(model)
    # As many steps as probe + fine-tuning took, however the probe's length was given.
    per_pass = math.ceil(len(target.train) / min(t.batch_size, len(target.train)))
    length = ({"epochs": t.epochs + recipe.finetune_epochs} if t.steps is None
              else {"steps": t.steps + recipe.finetune_epochs * per_pass})
    baseline = scratch_baseline(spec, trainer, target, **length,
                                head_args=head_args)

    return summarise(
        ROUTE, target.task, metrics, baseline,
        carried_over="stem and trunk (frozen" + (", then fine-tuned)" if recipe.finetune_epochs
                                                 else ")"),
        frozen_trunk_metrics=frozen_metrics, cached_features=recipe.cache_features,
        trainable_parameters_in_probe=count_parameters(model.heads["target"]),
        source=source.name if source else spec.model.trunk, target=target.name,
    )


def _head_metrics(head: nn.Module, val: Split, task: Task) -> dict[str, float]:
    # Cached features in memory: one pass; on disk: read batch by batch. Either way through the
    # run's precision, as the head trains (evaluate_split).
    out = evaluate_split(head, head, val.x, None if val.is_lazy else len(val))
    return task_metrics(task, out, val.y.to(out.device))


# --------------------------------------------------------------------------------------------------
# Prose and advice (what `tlroutes routes --explain`, the report and `tlroutes plan` say)
# --------------------------------------------------------------------------------------------------

PROSE = RouteProse(
    "Use the pretrained backbone as a feature extractor for a new kind of task in the same "
    "domain: freeze it, train a new head, then maybe tune both (LP-FT).",
    example="classifier backbone + a new network for object localisation",
    sharing=Sharing(stems="carried over",
                    trunk="carried over, frozen then maybe tuned (LP-FT)",
                    heads="new head, new kind", stages="source → target"),
)


def recommend(problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> Advice:
    """The plan's advice: cache the frozen trunk's features."""
    return {"cache_features": True}, {
        "cache_features": "The trunk is frozen: its features are computed once."}


# --------------------------------------------------------------------------------------------------
# Report (the report's route section; see tlroutes.routes.registry for the protocol)
# --------------------------------------------------------------------------------------------------


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """The report's route section: the run's settings and extra measurements
    (the frozen trunk's metrics, the probe's size)."""
    return details_blocks(run)


#: The run file's top-level blocks this route reads besides those every run reads (route, order,
#: constraints, seed, seeds, recipe, hardware, tracking); another one set is refused at resolve.
RUN_FILE_BLOCKS: frozenset[str] = frozenset(
    {"source", "target", "model", "source_training", "target_training", "baseline"})
