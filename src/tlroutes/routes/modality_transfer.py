"""Modality Transfer: a new stem in front of a carried-over, mostly frozen trunk, with a new head.

Different task, different domain, one after the other (a photo classifier's backbone →
detection on x-rays; a language model's transformer → signals).

Recipe (the frozen pretrained transformer of Lu et al., 2021, "Pretrained Transformers as
Universal Computation Engines"):
1. ``source``: train the model on the source problem (skipped when ``source: null``: the
   pretrained trunk, e.g. ``minilm_l6``, is the source).
2. Give the target domain a new stem (an input adapter: patchify, project, embed) and the target
   task a new head; drop the source's.
3. ``target``: freeze everything except the new stem, the head and the ``trainable`` patterns
   (by default the trunk's norms and positional embeddings), and train.
4. ``control``: the same architecture, randomly initialised, with the same parts trainable —
   what the frozen trunk is worth without its pretraining.
5. ``baseline``: the same architecture from scratch with every part trainable, same budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from tlroutes.backbones import create_head, create_stem
from tlroutes.config import RunSpec
from tlroutes.matrix import Route
from tlroutes.model import TransferModel, count_parameters, freeze, unfreeze
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block
from tlroutes.routes.common import RecipeSpec, load_pair, summarise
from tlroutes.routes.registry import Advice, RouteProse, Sharing
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer
from tlroutes.train.from_spec import build, evaluate, supervised_stage

if TYPE_CHECKING:
    from tlroutes.measure.evidence import Evidence
    from tlroutes.problem import Problem

ROUTE = Route.MODALITY_TRANSFER
FPT_DEFAULT = ("*norm*", "*pos_embed*")


class Recipe(RecipeSpec):
    """Modality Transfer settings (the run file's ``recipe:`` block)."""

    trainable: list[str] | None = Field(
        None, description="Trunk parameter patterns trained besides the new stem and head. "
        "Default: the trunk's own FPT patterns when it declares them (MiniLM: LayerNorms and "
        "position embeddings), else ['*norm*', '*pos_embed*']; [] freezes the whole trunk.",
    )
    stem: str = Field("auto", description="The new stem's kind; 'auto' (default) picks the "
                      "adapter for the target's modality and the trunk.")
    stem_args: dict[str, Any] = Field(default_factory=dict, description="Arguments of the new "
                                      "stem, e.g. {patch: 4}. Default {}.")
    control: bool = Field(True, description="Also train the randomly initialised control. "
                          "Default true.")


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Run the recipe; returns the summary (see :func:`tlroutes.routes.common.summarise`)."""
    source, target = load_pair(ROUTE, spec)
    t = spec.target_training

    trainer.seed_for("model")
    if source is not None:
        model = build(spec.model, {"source": source.domain}, {"source": source.task})
        trainer.fit(supervised_stage("source", model, source, spec.source_training, spec.seed,
                                     stem="source", head="source"))
    else:
        model = build(spec.model, {"target": target.domain}, {"target": target.task})
    trainer.seed_for("target-parts")
    patterns = _trainable(recipe, model)
    _new_stem_and_head(model, target, recipe)
    _freeze_for_transfer(model, patterns)
    trainer.fit(supervised_stage("target", model, target, t, spec.seed, stem="target",
                                 head="target", eval_modules=[model.trunk]))
    metrics = evaluate(model, target.test, target.task, stem="target", head="target")
    trainer.save_model(model)
    extra: dict[str, Any] = {
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "all_parameters": count_parameters(model),
        "trainable_patterns": patterns,
    }

    if recipe.control:
        trainer.seed_for("control-model")
        control = build(spec.model, {"target": target.domain}, {"target": target.task},
                        fresh=True)
        _new_stem_and_head(control, target, recipe)
        _freeze_for_transfer(control, patterns)
        trainer.fit(supervised_stage("control", control, target, t, spec.seed, stem="target",
                                     head="target", eval_modules=[control.trunk]))
        extra["control"] = evaluate(control, target.test, target.task, stem="target",
                                    head="target")

    baseline = None
    if spec.baseline:
        trainer.seed_for("baseline-model")
        scratch = build(spec.model, {"target": target.domain}, {"target": target.task},
                        fresh=True)
        _new_stem_and_head(scratch, target, recipe)
        trainer.fit(supervised_stage("baseline", scratch, target, t, spec.seed, stem="target",
                                     head="target"))
        baseline = evaluate(scratch, target.test, target.task, stem="target", head="target")

    return summarise(
        ROUTE, target.task, metrics, baseline,
        carried_over="trunk (frozen but " + (", ".join(patterns) or "nothing") + ")",
        source=source.name if source else spec.model.trunk, target=target.name, **extra,
    )


def _trainable(recipe: Recipe, model: TransferModel) -> list[str]:
    if recipe.trainable is not None:
        return list(recipe.trainable)
    return list(getattr(model.trunk, "FPT_PATTERNS", FPT_DEFAULT))


def _new_stem_and_head(model: TransferModel, target, recipe: Recipe) -> None:
    """Replace whatever stems and heads the model has by the target's own."""
    stem = create_stem(target.domain, model.trunk, recipe.stem, **recipe.stem_args)
    head = create_head(target.task, model.trunk.out_dim)
    for name in list(model.stems):
        if name != "target":
            model.remove_stem(name)
    for name in list(model.heads):
        if name != "target":
            model.remove_head(name)
    model.add_stem("target", stem, target.domain, replace=True)
    model.add_head("target", head, target.task, replace=True)


def _freeze_for_transfer(model: TransferModel, patterns: list[str]) -> None:
    freeze(model, parts=["trunk"])
    if patterns:
        unfreeze(model, patterns=[f"trunk.{p}" if not p.startswith("*") else p
                                  for p in patterns])


# --------------------------------------------------------------------------------------------------
# Prose and advice (what `tlroutes routes --explain`, the report and `tlroutes plan` say)
# --------------------------------------------------------------------------------------------------

PROSE = RouteProse(
    "Reuse a pretrained trunk although both domain and task differ: a new stem adapts the new "
    "input, a new head produces the new output, and the trunk stays mostly frozen.",
    example="photo classifier backbone → detection on x-rays",
    sharing=Sharing(stems="new stem", trunk="carried over, mostly frozen",
                    heads="new head", stages="source → target"),
)


def recommend(problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> Advice:
    """The plan's advice: train a random-trunk control beside the transfer."""
    return {"control": True}, {"control": (
        "A randomly initialised trunk trained the same way tells whether the pretrained trunk "
        "carried anything over.")}


# --------------------------------------------------------------------------------------------------
# Report (the report's route section; see tlroutes.routes.registry for the protocol)
# --------------------------------------------------------------------------------------------------


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """The report's route section: the run's settings and extra measurements
    (trainable patterns, the random-init control)."""
    return details_blocks(run)


#: The run file's top-level blocks this route reads besides those every run reads (route, order,
#: constraints, seed, seeds, recipe, hardware, tracking); another one set is refused at resolve.
RUN_FILE_BLOCKS: frozenset[str] = frozenset(
    {"source", "target", "model", "source_training", "target_training", "baseline"})
