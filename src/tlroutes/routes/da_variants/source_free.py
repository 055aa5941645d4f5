"""Source-free Domain Adaptation: SHOT, a trained source model adapted without the source data.

Liang, Hu & Feng, "Do We Really Need to Access the Source Data? Source Hypothesis Transfer for
Unsupervised Domain Adaptation", ICML 2020. Chosen by ``constraints: {source_data: false}`` (or
``recipe.variant: source_free``).

Recipe:
1. The source model (stem, trunk and a head over the source's classes), either
   - trained here on the run's ``source:`` data with label-smoothed cross-entropy (ε =
     ``label_smoothing``, 0.1) in the stage ``source`` — the data stands in for the model's
     provider and is **not read again** afterwards; or
   - loaded from ``variant_args.source_model``: a finished run's folder (its
     ``model.safetensors``) or a weights file holding stem, trunk and one head, built from the
     run file's ``model:`` block. Then ``source:`` may be null.
   Evaluated on the target as it is, this is the **source-only** baseline.
2. ``adapt``: the head (the source *hypothesis*) is frozen; stem and trunk minimise on target
   batches only ``im_weight`` × (L_ent + L_div) + ``beta`` × cross-entropy to pseudo-labels,
   recomputed before every epoch by SHOT's weighted-centroid clustering of the target's
   features (:mod:`tlroutes.objectives.source_free`).
3. Checkpoints are selected without target labels (``selection: im``, default; ``snd``; or
   ``last``, the paper's fixed budget); ``target_accuracy`` reads target validation labels and is
   marked so; ``source_accuracy`` is refused (no source data).

The source-free contract is enforced: the adapt stage has one stream, the target's, whose labels
are replaced by sample indices (the step looks up its pseudo-labels with them), and its step
refuses any other batch. ``features.npz`` holds target-test features only (the source data is not
read after the source stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from tlroutes.backbones.pretrained.weights import describe_differences, state_differences
from tlroutes.config import RunSpec, format_validation_error
from tlroutes.errors import ConfigError, shorten
from tlroutes.matrix import Route
from tlroutes.model import TransferModel, freeze
from tlroutes.objectives.source_free import (
    LABEL_SMOOTHING,
    PSEUDO_LABEL_WEIGHT,
    SHOTLoss,
    centroid_pseudo_labels,
    smoothed_cross_entropy,
)
from tlroutes.objectives.validators import information_maximization, soft_neighborhood_density
from tlroutes.problem import Problem, Split
from tlroutes.routes.common import summarise
from tlroutes.routes.da_variants import UNLABELLED_TARGET_NOTE, target_metrics, to_source_labels
from tlroutes.runfolder import atomic_write
from tlroutes.summary import Summary
from tlroutes.train.checkpoint import read_weights
from tlroutes.train.engine import Trainer, evaluate_split
from tlroutes.train.from_spec import build, evaluate, stage, stream

if TYPE_CHECKING:
    from tlroutes.routes.domain_adaptation import Recipe

ROUTE = Route.DOMAIN_ADAPTATION
HEAD = "task"
"""The head's name in the model (the Domain Adaptation route's)."""
FEATURE_SAMPLES = 500
"""Target-test samples whose trunk features go into ``features.npz``."""
TARGET_STREAM = "target"
"""The adapt stage's only stream."""


class Options(BaseModel):
    """``recipe.variant_args`` of the source-free variant (SHOT); every field has a default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    source_model: str | None = Field(
        None, description="A trained source model: a finished run's folder (its "
        "model.safetensors) or a safetensors file with stem, trunk and one head, for the run "
        "file's model block and the target's classes in the source's order. Default: none "
        "(trained here on `source:`).",
    )
    beta: float = Field(
        PSEUDO_LABEL_WEIGHT, ge=0, description="β, weight of the cross-entropy to the "
        "pseudo-labels; 0 drops the term. Default 0.3 (the paper's, digits and Office).",
    )
    im_weight: float = Field(
        1.0, ge=0, description="Weight of the information-maximisation loss. Default 1.",
    )
    diversity: bool = Field(
        True, description="Include the diversity term L_div (entropy of the mean prediction). "
        "Default true; false leaves plain entropy minimisation (SHOT's ablation).",
    )
    label_smoothing: float = Field(
        LABEL_SMOOTHING, ge=0, lt=1, description="ε of the source stage's label-smoothed "
        "cross-entropy. Default 0.1 (the paper's).",
    )
    rounds: int = Field(
        1, ge=0, le=10, description="Refinement rounds of the pseudo-label centroids from hard "
        "labels. Default 1 (the paper's).",
    )


def options(args: dict) -> Options:
    """``variant_args`` validated; one :class:`ConfigError` naming every problem."""
    try:
        return Options.model_validate(args)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Options,
                                                  "variant_args of variant source_free")) from None


class SmoothedStep(nn.Module):
    """The source stage's step: label-smoothed cross-entropy of the head on the source batch."""

    def __init__(self, model: TransferModel, epsilon: float) -> None:
        super().__init__()
        self.model, self.epsilon = model, epsilon

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        x, y = batch["train"]
        return smoothed_cross_entropy(self.model(x, head=HEAD), y, self.epsilon)


class SHOTStep(nn.Module):
    """The adapt stage's step: SHOT's loss on a target batch, the head frozen.

    The batch's ``y`` are sample indices into the target's training split (never labels); the
    pseudo-labels are a buffer, so a checkpoint holds the ones its epoch trained on and a resumed
    run continues exactly.
    """

    def __init__(self, model: TransferModel, loss: SHOTLoss, samples: int) -> None:
        super().__init__()
        self.model, self.loss = model, loss
        self.register_buffer("pseudo", torch.zeros(samples, dtype=torch.long))

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]):
        if set(batch) != {TARGET_STREAM}:
            # The contract of source-free adaptation, checked where the data arrives.
            raise ConfigError(f"Source-free adaptation received batches from {sorted(batch)}; "
                              f"it may only read '{TARGET_STREAM}'.")
        x, index = batch[TARGET_STREAM]
        logits = self.model.heads[HEAD](self.model.features(x))
        return self.loss(logits, self.pseudo[index])

    @torch.no_grad()
    def refresh(self, x: Tensor, rounds: int) -> None:
        """Recompute the pseudo-labels of the target inputs ``x`` with the current weights."""
        features = evaluate_split(self.model, self.model.features, x)
        logits = evaluate_split(self.model, self.model.heads[HEAD], features)
        labels = centroid_pseudo_labels(features, logits, rounds)
        self.pseudo.copy_(labels.to(self.pseudo.device))


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer, source: Problem | None,
        target: Problem) -> Summary:
    """Run SHOT (see the module doc); returns the summary, baseline source-only.

    Raises:
        ConfigError: no trained source model (neither ``source:`` data nor
            ``variant_args.source_model``), target labels asked for, ``selection:
            source_accuracy``, a source model that does not fit, or a non-classification task.
    """
    opts = options(recipe.variant_args)
    _check(spec, recipe, source, target, opts)
    if source is not None:
        # The target's classes in the source's order (each must be a source class).
        target = to_source_labels(target, source)

    trainer.seed_for("model")
    if opts.source_model is not None:
        model = build(spec.model, {"input": target.domain}, {HEAD: target.task})
        origin = _load_source_model(model, opts.source_model)
    else:
        assert source is not None  # _check
        model = build(spec.model, {"input": source.domain}, {HEAD: source.task})
        s = spec.source_training
        trainer.fit(stage("source", SmoothedStep(model, opts.label_smoothing),
                          {"train": stream(source.train, s, spec.seed, "source")},
                          lambda: evaluate(model, source.val, source.task, head=HEAD),
                          source.task, s))
        origin = f"trained here on '{source.name}' (label smoothing {opts.label_smoothing})"
    source_only = target_metrics(target,
                                 lambda: evaluate(model, target.test, target.task, head=HEAD))
    before = _target_features(model, target) if trainer.is_main else None

    metrics = adapt(spec, recipe.selection, trainer, model, target, opts)

    trainer.save_model(model)
    if trainer.is_main:
        _save_features(trainer.run_dir / "features.npz", target, before,
                       _target_features(model, target))
    unscored = target.unlabelled
    return summarise(
        ROUTE, target.task, metrics, None if unscored else source_only,
        baseline_kind="source_only", baselines={} if unscored else {"source_only": source_only},
        method="shot", target_unlabelled=unscored,
        metric_note=UNLABELLED_TARGET_NOTE if unscored else None,
        carried_over="stem, trunk and head (the head frozen while adapting)",
        selection=recipe.selection,
        selection_uses_target_labels=recipe.selection == "target_accuracy",
        target_labels=0.0, source=source.name if source is not None else opts.source_model,
        target=target.name, source_model=origin, beta=opts.beta, im_weight=opts.im_weight,
        diversity=opts.diversity, source_data_read_while_adapting=False,
    )


def adapt(spec: RunSpec, selection: str, trainer: Trainer, model: TransferModel,
          target: Problem, opts: Options) -> dict[str, float]:
    """SHOT's ``adapt`` stage on the target alone; returns the target's test metrics.

    Takes no source problem: what it cannot reach it cannot read.
    """
    t = spec.target_training
    freeze(model, parts=["heads"])
    # Labels replaced by positions: the step can look up pseudo-labels and cannot see labels.
    indexed = Split(target.train.x, torch.arange(len(target.train)))
    step = SHOTStep(model, SHOTLoss(opts.beta, opts.im_weight, opts.diversity),
                    len(target.train))
    refresh = (lambda: step.refresh(target.train.x, opts.rounds)) if opts.beta > 0 else None
    if refresh is not None:
        refresh()  # the source model's pseudo-labels for the first epoch
    monitor, mode = _selection(selection)
    trainer.fit(stage("adapt", step, {TARGET_STREAM: stream(indexed, t, spec.seed, "adapt-target")},
                      lambda: validate_target(model, target), target.task, t, monitor=monitor,
                      mode=mode, eval_modules=[model.heads], on_epoch_end=refresh,
                      restore_best=selection != "last"))
    return target_metrics(target, lambda: evaluate(model, target.test, target.task, head=HEAD))


def _check(spec: RunSpec, recipe: Recipe, source: Problem | None, target: Problem,
           opts: Options) -> None:
    if source is None and opts.source_model is None:
        raise ConfigError(
            "Source-free adaptation needs a trained source model, but the run gives neither "
            "source data nor a model: set `source:` (its data trains the source model here and "
            "is not read while adapting) or recipe.variant_args.source_model (a finished run's "
            "folder, or its model.safetensors)."
        )
    if target.task.kind != "classification":
        raise ConfigError(
            f"Source-free adaptation (SHOT) clusters class predictions, so it needs a "
            f"classification target; '{target.name}' is {target.task.kind}. With source data, "
            "use the closed variant (constraints.source_data: true)."
        )
    if recipe.target_labels > 0:
        raise ConfigError(
            f"Source-free adaptation (SHOT) uses no target labels, but target_labels is "
            f"{recipe.target_labels}. Set it to 0, or with labelled target data and source data "
            "use variant new_label_set or closed."
        )
    _selection(recipe.selection)


def _selection(selection: str) -> tuple[str, str]:
    """The adapt stage's validation key and mode: target-only scores (``last``: IM, logged
    only, since the stage then keeps its last epoch)."""
    if selection == "source_accuracy":
        raise ConfigError(
            "selection 'source_accuracy' reads the source's validation data, which source-free "
            "adaptation does not have; use selection: im (default) or snd (label-free), or "
            "target_accuracy (uses target validation labels)."
        )
    if selection == "last":
        return "target_im", "max"  # logged only: the stage keeps its last epoch
    return f"target_{selection.removeprefix('target_')}", "max"


def validate_target(model: TransferModel, target: Problem) -> dict[str, float]:
    """Label-free scores of the target's validation predictions, and (logged for inspection
    only, unless selected on) their accuracy. Reads no source data."""
    logits = evaluate_split(model, lambda x: model(x, head=HEAD), target.val.x)
    out = {"target_im": information_maximization(logits),
           "target_snd": soft_neighborhood_density(logits)}
    if not target.unlabelled:
        out.update({f"target_{k}": v for k, v in evaluate(model, target.val, target.task,
                                                          head=HEAD).items()})
    return out


def _load_source_model(model: TransferModel, where: str) -> str:
    """Load a finished run's whole model (stem, trunk, one head) into ``model``; its origin."""
    path = Path(where)
    shown = shorten(where)
    if path.is_dir():
        file = path / "model.safetensors"
        if not file.is_file():
            seeds = sorted(p.parent.name for p in path.glob("seed-*/model.safetensors"))
            hint = (f" It holds one per seed: name one of {', '.join(seeds[:3])}."
                    if seeds else " Give a finished run's folder.")
            raise ConfigError(f"variant_args.source_model: {shown} has no model.safetensors."
                              + hint)
    elif path.is_file():
        file = path
    else:
        raise ConfigError(f"variant_args.source_model: {shown} does not exist; give a finished "
                          "run's folder or its model.safetensors.")
    saved = _renamed(read_weights(file), "stems", "input", shown)
    saved = _renamed(saved, "heads", HEAD, shown)
    differences = state_differences(model.state_dict(), saved, "source model")
    if any(differences.values()):
        raise ConfigError(
            f"variant_args.source_model: {shown} does not fit this run's model "
            f"({describe_differences(differences, 'source model', n=4)}). Use the model block "
            "of the run that trained it, and a target with the classes of its head (in the "
            "same order)."
        )
    model.load_state_dict(saved, strict=True)
    return f"loaded from {shown}"


def _renamed(state: dict[str, Tensor], part: str, name: str, shown: str) -> dict[str, Tensor]:
    """``state`` with its one ``<part>.<any>.`` module renamed ``<part>.<name>.`` (a run of
    another route names its stem or head otherwise)."""
    names = sorted({k.split(".")[1] for k in state if k.startswith(f"{part}.")})
    if len(names) > 1:
        raise ConfigError(
            f"variant_args.source_model: {shown} holds {len(names)} {part} ({', '.join(names)}); "
            f"source-free adaptation needs a model with one, the source's."
        )
    if not names or names[0] == name:
        return state
    old = f"{part}.{names[0]}."
    return {(f"{part}.{name}." + k[len(old):] if k.startswith(old) else k): v
            for k, v in state.items()}


def _feature_index(n: int) -> Tensor:
    """Up to FEATURE_SAMPLES positions spread evenly over ``n`` (no RNG)."""
    return torch.linspace(0, n - 1, min(n, FEATURE_SAMPLES)).round().long().unique()


def _target_features(model: TransferModel, target: Problem) -> np.ndarray:
    x = target.test.x[_feature_index(len(target.test))]
    return evaluate_split(model, model.features, x).float().cpu().numpy()


def _save_features(path: Path, target: Problem, before: np.ndarray | None,
                   after: np.ndarray) -> None:
    """``features.npz`` with target-test features only (domain 1): no source data is read."""
    label = target.test.y[_feature_index(len(target.test))].cpu().numpy()
    data = {"before": before, "after": after, "domain": np.ones(len(label), np.int8),
            "label": label,
            "domain_names": np.array(["source: not read (source-free)",
                                      f"target: {target.name}"])}
    atomic_write(path, lambda f: np.savez_compressed(f, **data))

