r"""Partial Domain Adaptation: the target holds only some of the source's classes.

Chosen by ``recipe.variant: partial`` (or ``auto`` when the target's classes present are a strict
subset of the source's). The target's labels are renumbered in the source's label order, so the
source-trained head serves both; no target label is used for training unless
``recipe.target_labels`` > 0.

Two methods (``variant_args.method``), both built on PADA's class weights :math:`\gamma` (the
mean softmax of the target's training predictions, divided by its largest entry), which
down-weight the source classes the target lacks:

- ``weighted_mcc`` (default): class-weighted MCC
  (:mod:`tlroutes.objectives.alignment.weighted_mcc`): MCC's per-class confusion rows averaged
  with weights :math:`\gamma`, plus the :math:`\gamma`-weighted source cross-entropy. On digits
  0-9 → rotated 0-4 it gained +0.33 over source-only against PADA's +0.08, level with
  closed-set MCC (+0.35); and unlike closed-set MCC it removes the negative transfer of the
  planted known-answer problem (benchmarks/RESULTS.md, "partial-label shift", has the other
  shifts measured).
- ``pada``: PADA (:mod:`tlroutes.objectives.alignment.pada`, Cao et al., ECCV 2018): the
  :math:`\gamma`-weighted source cross-entropy + the class-weighted domain-adversarial loss
  (source side weighted by :math:`\gamma_{y_i}`, target side by 1).

Recipe:

1. ``source``: train on the labelled source (all K classes); evaluated on the target as it is,
   this is the **source-only** baseline.
2. ``adapt``: from the source weights, on batches of both domains, minimise
   :math:`\frac{1}{n_s}\sum_i\gamma_{y_i}\mathrm{CE}_i` + ``trade_off`` × the method's
   class-weighted loss. :math:`\gamma` is 1 (no weighting) for the first ``warm_up_epochs``
   adaptation epochs, then computed after every epoch (the paper updates it every 500
   iterations; here an epoch is the natural pass over the target, and with small data it is a
   few dozen steps). With ``warm_up_epochs: 0`` the first :math:`\gamma` is the source-only
   model's, before the first step, as PADA's paper has it; but on a hard shift that model's
   target predictions are mostly wrong (source-only accuracy 0.25 on rotated digits), so its
   :math:`\gamma` down-weights present classes and the gain halves (+0.15 against +0.33 with
   the default 2, weighted MCC, digits 0-9 → rotated 0-4, five seeds).
3. Selection without target labels: ``im`` and ``snd`` become ``last`` (the last epoch, the
   paper's fixed budget), because information maximisation's diversity term rewards predicting
   *every* source class, the error partial adaptation avoids, and SND picked the least adapted
   epoch on the known-answer problem. ``source_accuracy`` (a poor guide here: γ lowers the
   absent classes' weight, so the source's accuracy falls as adaptation works),
   ``last`` and ``target_accuracy`` are taken as set.

``variant_args``: ``method`` (``weighted_mcc``, default, or ``pada``), ``warm_up_epochs``
(default 2, see step 2), ``temperature`` (softmax temperature T of the class weights; default
1.0, PADA's; TLlib uses 0.1), ``class_weights`` (default true; false keeps :math:`\gamma = 1`:
plain MCC or plain DANN on the same pipeline, the ablation that shows the negative transfer the
weights remove), ``weigh_source_loss`` (default true: :math:`\gamma` on the source
cross-entropy too), ``mcc_temperature`` (MCC's T, default 2.5), ``hidden`` and ``depth`` of
PADA's domain discriminator (defaults 256 and 2).

The summary's details add ``class_weights`` (:math:`\gamma` by source class name, at the end) and
``mean_weight_absent`` / ``mean_weight_present``: the mean :math:`\gamma` over source classes
absent from / present in the target (read from the target's labels, for the report only).
Papers: Cao, Ma, Long & Wang, "Partial Adversarial Domain Adaptation", ECCV 2018; Jin, Wang,
Long & Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tlroutes.errors import ConfigError, did_you_mean
from tlroutes.objectives.alignment.pada import (
    PartialAdversarialLoss,
    pada_class_weights,
    weighted_cross_entropy,
)
from tlroutes.objectives.alignment.weighted_mcc import ClassWeightedMCC
from tlroutes.problem import Problem
from tlroutes.routes import domain_adaptation as da
from tlroutes.routes.common import summarise
from tlroutes.routes.da_variants import (
    UNLABELLED_TARGET_NOTE,
    label_relation,
    target_metrics,
    to_source_labels,
    variant_options,
)
from tlroutes.train.engine import evaluate_split
from tlroutes.train.from_spec import build, evaluate, stage, supervised_stage

if TYPE_CHECKING:
    from tlroutes.config import RunSpec
    from tlroutes.model import TransferModel
    from tlroutes.routes.domain_adaptation import Recipe
    from tlroutes.summary import Summary
    from tlroutes.train.engine import Trainer

METHODS = ("weighted_mcc", "pada")
"""The partial variant's methods (``variant_args.method``), the default first."""
OPTIONS: dict[str, Any] = {"method": METHODS[0], "temperature": 1.0, "class_weights": True,
                           "mcc_temperature": 2.5, "weigh_source_loss": True,
                           "warm_up_epochs": 2, "hidden": 256, "depth": 2}
"""``variant_args`` of the partial variant and their defaults (see the module docstring)."""


class PartialStep(nn.Module):
    """γ-weighted source loss (+ labelled target loss) + ``trade_off`` × the class-weighted
    alignment loss: PADA's adversarial loss or class-weighted MCC (``align`` holds γ)."""

    def __init__(self, model: TransferModel, align: PartialAdversarialLoss | ClassWeightedMCC,
                 trade_off: float, *, weigh_source_loss: bool = True) -> None:
        super().__init__()
        self.model, self.align, self.trade_off = model, align, trade_off
        self.weigh_source_loss = weigh_source_loss
        # Adaptation epochs finished, a buffer so that a resumed stage knows when γ starts.
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]):
        (xs, ys), (xt, _) = batch["source"], batch["target"]
        # One pass over both domains, so batch-norm statistics see the mixture (as for DANN).
        f = self.model.features(torch.cat([xs, xt]))
        g = self.model.heads["task"](f)
        f_s, f_t, g_s, g_t = f[: len(xs)], f[len(xs):], g[: len(xs)], g[len(xs):]
        gamma = (self.align.class_weight if self.weigh_source_loss
                 else torch.ones_like(self.align.class_weight))
        loss = weighted_cross_entropy(g_s, ys, gamma)
        if "target_labeled" in batch:
            xl, yl = batch["target_labeled"]
            loss = loss + nn.functional.cross_entropy(self.model(xl, head="task"), yl)
        if isinstance(self.align, PartialAdversarialLoss):
            transfer = self.align(f_s, f_t, ys)
            logs = {"transfer_loss": transfer,
                    "domain_accuracy": torch.as_tensor(self.align.last_accuracy)}
        else:
            transfer = self.align(f_s, f_t, g_s, g_t)
            logs = {"transfer_loss": transfer}
        return loss + self.trade_off * transfer, logs


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer, source: Problem,
        target: Problem) -> Summary:
    """Partial Domain Adaptation (class-weighted MCC or PADA); see the module docstring."""
    opts = variant_options("partial", recipe.variant_args, OPTIONS)
    if opts["method"] not in METHODS:
        raise ConfigError(
            f"variant_args.method of the partial variant must be one of {', '.join(METHODS)}, "
            f"got '{opts['method']}'.{did_you_mean(opts['method'], list(METHODS))}")
    if opts["warm_up_epochs"] < 0:
        raise ConfigError("variant_args.warm_up_epochs of the partial variant must be 0 or more "
                          f"(adaptation epochs with γ = 1), got {opts['warm_up_epochs']}.")
    relation = label_relation(source, target)
    target = to_source_labels(target, source)
    labelled = da._labelled_subset(target.train, recipe.target_labels, spec.seed)
    task = source.task

    trainer.seed_for("model")
    model = build(spec.model, {"input": source.domain}, {"task": task})
    s, t = spec.source_training, spec.target_training
    trainer.fit(supervised_stage("source", model, source, s, spec.seed, head="task"))
    source_only = target_metrics(target, lambda: evaluate(model, target.test, task, head="task"))
    metrics = source_only
    before = da._test_features(model, source, target) if trainer.is_main else None

    adapt = recipe.method != da.SOURCE_ONLY
    selection = "last" if recipe.selection in ("im", "snd") else recipe.selection
    gamma = torch.ones(task.num_outputs)
    if adapt:
        streams, steps = da.adapt_streams(source.train, target.train, labelled, t, spec.seed)
        trainer.seed_for("alignment")
        align: PartialAdversarialLoss | ClassWeightedMCC
        if opts["method"] == "pada":
            align = PartialAdversarialLoss(model.trunk.out_dim, task.num_outputs,
                                           max_steps=steps, hidden=opts["hidden"],
                                           depth=opts["depth"])
        else:
            align = ClassWeightedMCC(task.num_outputs, temperature=opts["mcc_temperature"])

        step = PartialStep(model, align, recipe.trade_off,
                           weigh_source_loss=opts["weigh_source_loss"])

        def update_weights(finished: bool = True) -> None:
            # γ from the target's training predictions (no target label read); 1 until
            # warm_up_epochs adaptation epochs are done.
            step.epochs_done += int(finished)
            if opts["class_weights"] and int(step.epochs_done) >= opts["warm_up_epochs"]:
                logits = evaluate_split(model, lambda x: model(x, head="task"), target.train.x)
                align.set_class_weight(pada_class_weights(logits, opts["temperature"]))

        update_weights(False)  # from the source-only model; a resumed stage loads its own γ
        monitor, mode = da._selection(selection, task)
        trainer.fit(stage("adapt", step, streams, lambda: da._validate(model, source, target),
                          task, t, monitor=monitor, mode=mode, on_epoch_end=update_weights,
                          restore_best=selection != "last"))
        metrics = target_metrics(target, lambda: evaluate(model, target.test, task, head="task"))
        gamma = align.class_weight.detach().float().cpu()

    trainer.save_model(model)
    if trainer.is_main:
        after = da._test_features(model, source, target) if adapt else None
        da._save_features(trainer.run_dir / "features.npz", source, target, before, after)
    weights = {name: round(float(w), 4) for name, w in zip(task.labels, gamma, strict=True)}
    absent = [weights[n] for n in relation.source_only]
    present = [weights[n] for n in relation.shared]
    details: dict[str, Any] = {}
    if adapt and recipe.method != "dann":
        details["method_note"] = (f"method '{recipe.method}' is not read by the partial variant: "
                                  "it runs variant_args.method (class-weighted MCC or PADA)")
    if selection != recipe.selection:
        details["selection_note"] = (f"'{recipe.selection}' scores predictions over every "
                                     "source class; the partial variant keeps the last epoch")
    unscored = target.unlabelled
    return summarise(
        da.ROUTE, task, metrics, None if unscored else source_only, baseline_kind="source_only",
        baselines={} if unscored else {"source_only": source_only},
        metric_note=UNLABELLED_TARGET_NOTE if unscored else None, target_unlabelled=unscored,
        method=_method_name(opts) if adapt else da.SOURCE_ONLY,
        carried_over="stem, trunk and head (the source's label set)", selection=selection,
        selection_uses_target_labels=selection == "target_accuracy",
        target_labels=recipe.target_labels, source=source.name, target=target.name,
        class_weights=weights,
        mean_weight_absent=sum(absent) / len(absent) if absent else None,
        mean_weight_present=sum(present) / len(present) if present else None,
        **details,
    )


def _method_name(opts: dict[str, Any]) -> str:
    """The method as the summary names it: without class weights, the unweighted original."""
    if opts["class_weights"]:
        return opts["method"]
    return "dann" if opts["method"] == "pada" else "mcc"
