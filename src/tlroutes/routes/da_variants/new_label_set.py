"""Supervised Domain Adaptation with a new label set: a new head on the source-trained trunk,
aligned across domains while it learns the target's labels.

The cross-domain analogue of Task Fine-Tuning. Chosen when target labels are given
(``target_labels`` > 0) and the target's classes differ from the source's (``variant: auto``),
or by ``variant: new_label_set``.

Recipe:
1. ``source``: stem, trunk and a source head trained on the labelled source.
2. The source head is dropped; a new head for the target's label set is put on the trunk.
3. ``adapt``: on batches of the source, the whole target training split (inputs only) and its
   labelled share (``target_labels``), minimise the target's supervised loss on the labelled
   batch plus ``trade_off`` × the alignment loss ``method`` between the trunk features of
   source and target. A method that reads class predictions (CDAN, JAN, MCC …) compares
   predictions over one label set, which the two sides do not share, and is refused.
4. Baselines, same budget (as many epochs of as many steps as ``adapt``, whose epoch is a pass
   over its longest stream, so that a few labelled samples are not trained on for fewer steps):
   ``target_supervised``, the same architecture from scratch on the
   labelled target samples (the gain is against it); ``fine_tuning``, the same source model
   and new head trained on the labelled target without alignment (in ``also``), which isolates
   what the alignment adds. ``fine_tuning`` is selected like ``adapt`` (``selection``).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from tlroutes.backbones import create_head
from tlroutes.config import RunSpec
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.objectives.alignment import ALIGNMENTS, list_alignments
from tlroutes.objectives.tasks import task_loss
from tlroutes.problem import Problem
from tlroutes.routes.common import summarise
from tlroutes.routes.da_variants.source_free import validate_target
from tlroutes.routes.domain_adaptation import (
    SOURCE_ONLY,
    AdaptationStep,
    Recipe,
    _labelled_subset,
    adapt_streams,
)
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer
from tlroutes.train.from_spec import build, evaluate, stage, stream, supervised_stage
from tlroutes.train.steps import SupervisedStep

ROUTE = Route.DOMAIN_ADAPTATION
HEAD = "task"
"""The target head's name (the Domain Adaptation route's)."""


class NewLabelStep(AdaptationStep):
    """Labelled-target loss of the new head + ``trade_off`` × alignment of trunk features."""

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]):
        (xs, _), (xt, _), (xl, yl) = batch["source"], batch["target"], batch["target_labeled"]
        # One pass over all three, so batch-norm statistics see the mixture of domains.
        f = self.model.features(torch.cat([xs, xt, xl]))
        f_s, f_t, f_l = f[: len(xs)], f[len(xs): len(xs) + len(xt)], f[len(xs) + len(xt):]
        head = self.model.heads[HEAD]
        loss = task_loss(self.task, head(f_l), yl)
        # The family call: feature-only methods ignore the logits, which are over the target's
        # classes on both sides (the source samples have no target class).
        transfer = self.align(f_s, f_t, head(f_s), head(f_t))
        logs = {"transfer_loss": transfer}
        if getattr(self.align, "last_accuracy", None) is not None:
            logs["domain_accuracy"] = torch.as_tensor(self.align.last_accuracy)
        return loss + self.trade_off * transfer, logs


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer, source: Problem,
        target: Problem) -> Summary:
    """Run the recipe (see the module doc); returns the summary, baseline target_supervised.

    Raises:
        ConfigError: no target labels, method ``source_only`` or one that reads class
            predictions, ``selection: source_accuracy`` (the source head is gone).
    """
    _check(recipe)
    labelled = _labelled_subset(target.train, recipe.target_labels, spec.seed)
    assert labelled is not None  # _check: target_labels > 0
    labelled_problem = Problem(target.name, target.task, target.domain, labelled, target.val,
                               target.test)
    s, t = spec.source_training, spec.target_training

    trainer.seed_for("model")
    model = build(spec.model, {"input": source.domain}, {"source": source.task})
    trainer.fit(supervised_stage("source", model, source, s, spec.seed, head="source"))
    trainer.seed_for("target-head")
    model.add_head(HEAD, create_head(target.task, model.trunk.out_dim), target.task)
    model.remove_head("source")
    # The fine-tuning baseline starts from the very same weights, new head included: the only
    # difference between the two is the alignment.
    fine_tuned = copy.deepcopy(model)

    streams, steps = adapt_streams(source.train, target.train, labelled, t, spec.seed)
    # the adaptation stage's epoch, so that fine-tuning and the baseline take the same steps
    per_epoch = max(x.steps_per_pass for x in streams.values())
    trainer.seed_for("alignment")
    align = ALIGNMENTS.build(recipe.method, features=model.trunk.out_dim,
                             classes=target.task.num_outputs, max_steps=steps,
                             **recipe.method_args)
    monitor, mode = _selection(recipe.selection)
    trainer.fit(stage("adapt", NewLabelStep(model, target.task, align, recipe.trade_off),
                      streams, lambda: validate_target(model, target), target.task, t,
                      monitor=monitor, mode=mode, restore_best=recipe.selection != "last"))
    metrics = evaluate(model, target.test, target.task, head=HEAD)
    trainer.save_model(model)

    trainer.fit(stage("fine_tuning", SupervisedStep(fine_tuned, target.task, head=HEAD),
                      {"train": stream(labelled, t, spec.seed, "fine_tuning")},
                      lambda: validate_target(fine_tuned, target), target.task, t,
                      monitor=monitor, mode=mode, restore_best=recipe.selection != "last",
                      steps_per_epoch=per_epoch))
    fine_tuning = evaluate(fine_tuned, target.test, target.task, head=HEAD)

    trainer.seed_for("baseline-model")
    scratch = build(spec.model, {"input": target.domain}, {HEAD: target.task}, fresh=True)
    trainer.fit(supervised_stage("target_supervised", scratch, labelled_problem, t, spec.seed,
                                 steps_per_epoch=per_epoch))
    scratch_metrics = evaluate(scratch, target.test, target.task)

    return summarise(
        ROUTE, target.task, metrics, scratch_metrics, baseline_kind="target_supervised",
        baselines={"target_supervised": scratch_metrics, "fine_tuning": fine_tuning},
        method=recipe.method, carried_over="stem and trunk (new head)",
        selection=recipe.selection,
        selection_uses_target_labels=recipe.selection == "target_accuracy",
        target_labels=recipe.target_labels, source=source.name, target=target.name,
        source_classes=list(source.task.labels), target_classes=list(target.task.labels),
    )


def _check(recipe: Recipe) -> None:
    if recipe.variant_args:
        raise ConfigError(
            f"variant new_label_set takes no variant_args (got {', '.join(recipe.variant_args)});"
            " its settings are the recipe's method, method_args, trade_off and target_labels."
        )
    if recipe.target_labels <= 0:
        raise ConfigError(
            "variant new_label_set learns the target's own label set from its labels, but "
            "target_labels is 0; set recipe.target_labels to the share of labelled target "
            "training samples (e.g. 0.1)."
        )
    if recipe.method == SOURCE_ONLY or ALIGNMENTS.needs_classification(recipe.method):
        feature_only = [m for m in list_alignments() if not ALIGNMENTS.needs_classification(m)]
        what = ("has no alignment loss" if recipe.method == SOURCE_ONLY else
                "compares class predictions across domains over one label set, which source "
                "and target do not share here")
        raise ConfigError(
            f"variant new_label_set aligns trunk features; method '{recipe.method}' {what}. "
            f"Use one of: {', '.join(feature_only)}."
        )
    _selection(recipe.selection)


def _selection(selection: str) -> tuple[str, str]:
    """The adapt stage's validation key and mode (the source head is gone)."""
    if selection == "source_accuracy":
        raise ConfigError(
            "selection 'source_accuracy' scores the source head, which variant new_label_set "
            "replaces; use selection: target_accuracy (target labels are given), im or snd."
        )
    if selection == "last":
        return "target_im", "max"  # logged only: the stage keeps its last epoch
    return f"target_{selection.removeprefix('target_')}", "max"
