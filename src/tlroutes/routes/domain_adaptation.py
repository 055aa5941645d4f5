"""Domain Adaptation: the same task carried to a new domain, with few or no target labels.

Same task kind, different domain, one after the other (ImageNet classifier → x-ray classifier).

Recipe:
1. ``source``: train on the labelled source. Evaluated on the target as it is, this is the
   **source-only** baseline.
2. ``adapt``: continue from the source weights on batches from both domains: the source task loss
   (plus the labelled target's, when ``target_labels`` > 0) plus ``trade_off`` × an alignment loss
   from the registry :data:`tlroutes.objectives.alignment.ALIGNMENTS` — DANN, Deep CORAL,
   multi-kernel MMD (DAN), CDAN(+E), MCC, JAN or any loss registered there.
3. Selection uses no target label by default: the information-maximisation score of the
   target's validation predictions (``selection: im``), or SND, or source validation accuracy.
   ``selection: target_accuracy`` uses target validation labels and is marked so in the summary.
4. With target labels, ``target_supervised``: the same architecture from scratch on the labelled
   target samples, same budget.

When the label sets differ (compared by name over the classes present), ``recipe.variant``
(default ``auto``, see :func:`choose_variant`) hands the run to a module of
:mod:`tlroutes.routes.da_variants`: ``partial`` (class-weighted MCC or PADA), ``open_set``
(source support or OSBP), ``new_label_set`` or ``source_free`` (SHOT). The summary's details
and the report name the variant and why.

At the end, ``features.npz`` in the run folder holds trunk features of up to
:data:`FEATURE_SAMPLES` source-test and as many target-test samples, from the source-only model
(``before``) and the adapted one (``after``), with ``domain`` (0 source, 1 target) and ``label``;
the run report draws them as 2-D maps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn

from tlroutes.config import RunSpec, TrainSpec
from tlroutes.data.load import load_problem
from tlroutes.errors import ConfigError, did_you_mean
from tlroutes.matrix import Route
from tlroutes.model import TransferModel
from tlroutes.objectives.alignment import ALIGNMENTS, list_alignments
from tlroutes.objectives.tasks import primary_metric, task_loss
from tlroutes.objectives.validators import information_maximization, soft_neighborhood_density
from tlroutes.problem import Problem, Split, Task
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block, Image, Notice, Text
from tlroutes.routes.common import RecipeSpec, require_fit, summarise
from tlroutes.routes.da_variants import (
    UNLABELLED_TARGET_NOTE,
    LabelRelation,
    check_unlabelled_target,
    label_relation,
    target_metrics,
    to_source_labels,
    variant_module,
)
from tlroutes.routes.registry import Advice, RouteProse, Sharing
from tlroutes.runfolder import atomic_write
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer, evaluate_split
from tlroutes.train.from_spec import build, evaluate, load, stage, stream, supervised_stage
from tlroutes.train.seeding import derive_seed
from tlroutes.train.streams import Stream

if TYPE_CHECKING:
    from tlroutes.measure.evidence import Evidence

ROUTE = Route.DOMAIN_ADAPTATION
SOURCE_ONLY = "source_only"
"""The recipe's ``method`` that skips the adaptation stage (the source-only model is the result)."""
FEATURE_SAMPLES = 500
"""Test samples per domain whose trunk features go into ``features.npz`` (a few hundred KB)."""


class Recipe(RecipeSpec):
    """Domain Adaptation settings (the run file's ``recipe:`` block)."""

    method: str = Field(
        "dann", description="Alignment loss, by its name in the alignment registry: 'dann' "
        "(default), 'coral', 'mmd' (multi-kernel, DAN), 'cdan' (CDAN+E), 'mcc', 'jan', or any "
        "registered loss; or 'source_only' (no adaptation stage).",
    )
    method_args: dict[str, Any] = Field(
        default_factory=dict, description="Options of the alignment loss, passed to its "
        "registered builder (e.g. {temperature: 2.0} for mcc, {linear: true} for mmd). "
        "Default: none (the method's defaults).",
    )
    trade_off: float = Field(1.0, ge=0, description="Weight of the alignment loss. Default 1.")
    target_labels: float = Field(
        0.0, ge=0, le=1, description="Share of the target's training samples whose labels are "
        "used (supervised adaptation); 0 (default) is unsupervised.",
    )
    variant: Literal["auto", "closed", "partial", "open_set", "new_label_set",
                     "source_free"] = Field(
        "auto", description="How the label sets relate, which picks the method. 'auto' "
        "(default): from the classes present (samples in any split, compared by name) — "
        "identical → 'closed'; target ⊂ source → 'partial'; the target has classes the source "
        "lacks → 'open_set' when the target is unlabelled (target_labels 0), 'new_label_set' "
        "when target labels are given; constraints.source_data false → 'source_free'. "
        "'closed': one label set, an alignment loss (`method`); set on a target ⊂ source it "
        "aligns as if the sets were one (the DANN baseline of partial adaptation). 'partial': "
        "class weights from the target's predictions down-weight source classes absent from "
        "the target, on class-weighted MCC (default) or PADA (variant_args.method). "
        "'open_set': a K+1-way classifier whose extra output is 'unknown', learned from the "
        "target samples no source sample resembles (default) or by OSBP (variant_args.method). "
        "'new_label_set': a new head on the source-trained stem and trunk. 'source_free': "
        "SHOT, adapting a trained source model without source data.",
    )
    variant_args: dict[str, Any] = Field(
        default_factory=dict, description="Options of the variant's method (each variant "
        "module lists its own, e.g. {threshold: 0.5} for open_set). Default: none (the "
        "method's defaults).",
    )
    selection: Literal["im", "snd", "source_accuracy", "last", "target_accuracy"] = Field(
        "im", description="Checkpoint selection: 'im' (default: information maximisation on "
        "target validation predictions), 'snd' (soft neighbourhood density), "
        "'source_accuracy', 'last' (no selection: the last epoch, the papers' fixed budget), "
        "all label-free on the target; 'target_accuracy' uses target validation labels and is "
        "marked so. The partial and open_set variants keep the last epoch for 'im' and 'snd', "
        "which score predictions over every source class.",
    )

    @field_validator("method")
    @classmethod
    def _registered(cls, value: str) -> str:
        # The registry is the one list of methods, so a new loss file is accepted here as is.
        names = methods()
        if value not in names:
            raise ValueError(
                f"unknown method '{value}'.{did_you_mean(value, names)} "
                f"Choose one of: {', '.join(names)}"
            )
        return value

    @field_validator("method_args")
    @classmethod
    def _method_takes(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")  # absent when the method itself was invalid
        if value and method == SOURCE_ONLY:
            raise ValueError("method 'source_only' has no alignment loss to pass options to")
        if value and method is not None:
            ALIGNMENTS.check_options(method, value)
        return value


def methods() -> list[str]:
    """The accepted ``recipe.method`` names: ``source_only``, then the registered losses."""
    return [SOURCE_ONLY, *list_alignments()]


def adapt_streams(source: Split, target: Split, labelled: Split | None, train: TrainSpec,
                  seed: int) -> tuple[dict[str, Stream], int]:
    """The adaptation stage's streams and its total steps (the variants use them too).

    Streams ``source`` and ``target`` (the unlabelled target inputs) and, when ``labelled`` is
    given, ``target_labeled``; an epoch is a pass over the longest of them.
    """
    streams = {"source": stream(source, train, seed, "adapt-source"),
               "target": stream(target, train, seed, "adapt-target")}
    if labelled is not None:
        streams["target_labeled"] = stream(labelled, train, seed, "adapt-labeled")
    return streams, train.total_steps(max(x.steps_per_pass for x in streams.values()))


class AdaptationStep(nn.Module):
    """Source task loss (+ labelled target loss) + ``trade_off`` × alignment loss."""

    def __init__(self, model: TransferModel, task: Task, align: nn.Module,
                 trade_off: float) -> None:
        super().__init__()
        self.model, self.task = model, task
        self.align, self.trade_off = align, trade_off

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]):
        (xs, ys), (xt, _) = batch["source"], batch["target"]
        # One pass over both domains, so batch-norm statistics see the mixture.
        f = self.model.features(torch.cat([xs, xt]))
        g = self.model.heads["task"](f)
        f_s, f_t = f[: len(xs)], f[len(xs):]
        g_s, g_t = g[: len(xs)], g[len(xs):]
        loss = task_loss(self.task, g_s, ys)
        if "target_labeled" in batch:
            xl, yl = batch["target_labeled"]
            loss = loss + task_loss(self.task, self.model(xl, head="task"), yl)
        # Every registered loss takes the family call; each reads what its method needs.
        transfer = self.align(f_s, f_t, g_s, g_t)
        logs = {"transfer_loss": transfer}
        if getattr(self.align, "last_accuracy", None) is not None:
            logs["domain_accuracy"] = torch.as_tensor(self.align.last_accuracy)
        return loss + self.trade_off * transfer, logs


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Run the recipe; returns the summary (see :func:`tlroutes.routes.common.summarise`)."""
    if spec.source is None:
        if recipe.variant in ("auto", "source_free"):
            # No source data at all: only a trained source model (variant_args.source_model)
            # can be adapted; the variant says so when none is given.
            target = _load_target(spec)
            check_unlabelled_target(target, recipe, "source_free")
            summary = variant_module("source_free").run(spec, recipe, trainer, None, target)
            summary.details.update(variant="source_free",
                                   variant_reason="source: null, only a trained source model")
            return summary
        raise ConfigError(
            f"Domain Adaptation variant '{recipe.variant}' needs a labelled `source` problem to "
            "adapt from; with only a trained source model use variant source_free "
            "(variant_args.source_model).")
    source = load(spec.source, spec.seed, "source")
    target = _load_target(spec)
    require_fit(ROUTE, source, target)
    if recipe.method != SOURCE_ONLY:
        ALIGNMENTS.check_task(recipe.method, source.task.kind)
    variant, reason = choose_variant(source, target, recipe, spec)
    check_unlabelled_target(target, recipe, variant)
    if variant != "closed":
        summary = variant_module(variant).run(spec, recipe, trainer, source, target)
        # Every variant's summary names the variant and why, for the report and summary.json.
        summary.details.update(variant=variant, variant_reason=reason)
        return summary
    if source.task.labels != target.task.labels:
        # The same classes present, declared in another order or with absent extras: the
        # target's labels are renumbered in the source's order, so one head serves both.
        target = to_source_labels(target, source)
    labelled = _labelled_subset(target.train, recipe.target_labels, spec.seed)

    trainer.seed_for("model")
    model = build(spec.model, {"input": source.domain}, {"task": source.task})
    s, t = spec.source_training, spec.target_training
    trainer.fit(supervised_stage("source", model, source, s, spec.seed, head="task"))
    source_only = target_metrics(
        target, lambda: evaluate(model, target.test, target.task, head="task"))
    metrics = source_only
    # Features of the source-only model, taken now because adaptation trains the same model on.
    before = _test_features(model, source, target) if trainer.is_main else None

    if recipe.method != "source_only":
        streams, steps = adapt_streams(source.train, target.train, labelled, t, spec.seed)
        trainer.seed_for("alignment")
        align = ALIGNMENTS.build(recipe.method, features=model.trunk.out_dim,
                                 classes=target.task.num_outputs, max_steps=steps,
                                 **recipe.method_args)
        step = AdaptationStep(model, source.task, align, recipe.trade_off)
        monitor, mode = _selection(recipe.selection, target.task)
        trainer.fit(stage("adapt", step, streams, lambda: _validate(model, source, target),
                          target.task, t, monitor=monitor, mode=mode,
                          restore_best=recipe.selection != "last"))
        metrics = target_metrics(
            target, lambda: evaluate(model, target.test, target.task, head="task"))

    trainer.save_model(model)
    if trainer.is_main:
        after = _test_features(model, source, target) if recipe.method != "source_only" else None
        _save_features(trainer.run_dir / "features.npz", source, target, before, after)
    baselines = {"source_only": source_only}
    if labelled is not None:
        trainer.seed_for("baseline-model")
        scratch = build(spec.model, {"input": target.domain}, {"task": target.task},
                        fresh=True)
        labelled_problem = Problem(target.name, target.task, target.domain, labelled,
                                   target.val, target.test)
        trainer.fit(supervised_stage("target_supervised", scratch, labelled_problem, t,
                                     spec.seed))
        baselines["target_supervised"] = evaluate(scratch, target.test, target.task)
    baseline_kind = "target_supervised" if labelled is not None else "source_only"
    unscored = target.unlabelled
    return summarise(
        ROUTE, target.task, metrics, None if unscored else baselines[baseline_kind],
        metric_note=UNLABELLED_TARGET_NOTE if unscored else None,
        target_unlabelled=unscored,
        baseline_kind=baseline_kind, baselines={} if unscored else baselines,
        method=recipe.method,
        carried_over="stem, trunk and head", selection=recipe.selection,
        selection_uses_target_labels=recipe.selection == "target_accuracy",
        target_labels=recipe.target_labels, source=source.name, target=target.name,
        variant=variant, variant_reason=reason,
    )


def _load_target(spec: RunSpec) -> Problem:
    """The target problem, labelled or not: unsupervised adaptation reads no target label (what
    would is refused by :func:`~tlroutes.routes.da_variants.check_unlabelled_target`)."""
    t = spec.target
    return load_problem(t, spec.seed if t.seed is None else t.seed, "target",
                        allow_unlabelled=True)


def choose_variant(source: Problem, target: Problem, recipe: Recipe,
                   spec: RunSpec) -> tuple[str, str]:
    """The Domain Adaptation variant to run and why, in one line.

    ``recipe.variant`` other than ``auto`` is taken as set, after checking that the label sets
    allow it. ``auto`` follows the label relation of the classes present (see
    :class:`Recipe`'s ``variant``); ``constraints.source_data: false`` picks ``source_free``.

    Raises:
        ConfigError: the variant does not fit the label sets (which one would is named), or
            source and target share no class while the target is unlabelled (which routes fit).
    """
    if not spec.constraints.source_data:
        if recipe.variant not in ("auto", "source_free"):
            raise ConfigError(
                f"variant '{recipe.variant}' trains on source data, but constraints.source_data "
                "is false; use variant 'source_free' (or auto)."
            )
        return "source_free", "constraints.source_data is false: only a trained source model"
    if source.task.kind != "classification" or target.task.kind != "classification":
        if recipe.variant not in ("auto", "closed"):
            raise ConfigError(
                f"variant '{recipe.variant}' compares class sets, so it needs classification "
                f"tasks; this pair is {source.task.kind} → {target.task.kind} (use 'closed')."
            )
        if source.task.labels != target.task.labels:
            raise ConfigError(
                f"Domain Adaptation carries the {source.task.kind} targets across domains, but "
                f"the source's {list(source.task.labels)} differ from the target's "
                f"{list(target.task.labels)}; for other targets across domains use "
                "modality_transfer."
            )
        return "closed", f"{source.task.kind}: one set of targets on both sides"
    relation = label_relation(source, target)
    labelled = recipe.target_labels > 0
    fits = _fitting_variant(relation, labelled)
    if recipe.variant == "auto":
        return fits, f"auto: {relation.describe()}" + (
            ", target labels given" if fits == "new_label_set" else "")
    if recipe.variant != fits and not _also_fits(recipe.variant, relation, labelled):
        raise ConfigError(
            f"variant '{recipe.variant}' does not fit these label sets: {relation.describe()}. "
            f"Use variant '{fits}' (or auto)."
        )
    return recipe.variant, f"set in the recipe ({relation.describe()})"


def _fitting_variant(relation: LabelRelation, labelled: bool) -> str:
    """The variant ``auto`` picks for a label relation (with or without target labels)."""
    kind = relation.kind
    if kind == "identical":
        return "closed"
    if kind == "subset":
        return "partial"
    if labelled:
        return "new_label_set"
    if kind == "disjoint":
        # Disjoint classes of one task kind are still the "same task" on the cube, so of the
        # sequential routes only Domain Adaptation (across domains) or Task Fine-Tuning (one
        # domain) take the pair; Modality and Task Adaptation refuse it (different task kind).
        raise ConfigError(
            f"Source and target have {relation.describe()}, and no target label is used "
            "(recipe.target_labels is 0): no route can learn classes the source never saw "
            "without a label of them. What fits this pair: Domain Adaptation with target "
            "labels (recipe.target_labels > 0, e.g. 0.1, runs variant new_label_set: a new "
            "head on the source-trained stem and trunk, features aligned across domains); or, "
            "when the two share one domain, route task_fine_tuning (declare the same `domain:` "
            "in both data blocks). If the target's classes are the source's under other names, "
            "rename them so the names match (classes are matched by name)."
        )
    return "open_set"


def _also_fits(variant: str, relation: LabelRelation, labelled: bool) -> bool:
    """Whether an explicitly set ``variant`` may run on a relation ``auto`` reads otherwise."""
    if variant == "source_free":
        return relation.kind in ("identical", "subset")  # SHOT needs the target's classes known
    if variant == "new_label_set":
        return labelled  # any label sets, given target labels
    if variant == "open_set":
        return relation.kind in ("superset", "overlapping", "identical", "subset") and bool(
            relation.shared)
    if variant == "partial":
        return relation.kind == "identical"  # weights near uniform: reduces to DANN
    if variant == "closed":
        # The target's classes renumbered into the source's: plain alignment that ignores the
        # classes the target lacks (the negative-transfer baseline partial adaptation fixes).
        return relation.kind == "subset"
    return False


def _selection(selection: str, task: Task) -> tuple[str, str]:
    """The validation key and mode that ``selection`` selects on (``last``: the source's
    metric, logged only, since the stage then keeps its last epoch)."""
    name, higher = primary_metric(task)
    mode = "max" if higher else "min"
    if selection in ("im", "snd"):
        if task.kind != "classification":
            raise ConfigError(
                f"selection '{selection}' scores class predictions; for a {task.kind} task use "
                "selection: source_accuracy (the source's validation metric)."
            )
        return f"target_{selection}", "max"
    if selection in ("source_accuracy", "last"):
        return f"source_{name}", mode
    return f"target_{name}", mode


def _labelled_subset(train: Split, share: float, seed: int) -> Split | None:
    if share <= 0:
        return None
    n = max(1, round(share * len(train)))
    g = torch.Generator().manual_seed(derive_seed(seed, "target-labels"))
    return train.subset(torch.randperm(len(train), generator=g)[:n])


def _validate(model: TransferModel, source: Problem, target: Problem) -> dict[str, float]:
    """Source validation accuracy and label-free scores of the target's validation inputs.

    ``target_accuracy`` reads target validation labels; it is only selected on when the recipe
    says so (and then marked), but is logged for inspection.
    """
    out = {f"source_{k}": v for k, v in evaluate(model, source.val, source.task, head="task")
           .items()}
    logits = evaluate_split(model, lambda x: model(x, head="task"), target.val.x)
    if target.task.kind == "classification":
        out["target_im"] = information_maximization(logits)
        out["target_snd"] = soft_neighborhood_density(logits)
    if not target.unlabelled:
        out.update({f"target_{k}": v for k, v in evaluate(model, target.val, target.task,
                                                          head="task").items()})
    return out


def _feature_index(n: int) -> Tensor:
    """Up to FEATURE_SAMPLES positions spread evenly over ``n`` (no RNG: resumes stay equal)."""
    k = min(n, FEATURE_SAMPLES)
    return torch.linspace(0, n - 1, k).round().long().unique()


def _test_features(model: TransferModel, source: Problem, target: Problem) -> np.ndarray:
    """Trunk features of the sampled source-test then target-test inputs, as float32."""
    parts = []
    for split in (source.test, target.test):
        x = split.x[_feature_index(len(split))]
        parts.append(evaluate_split(model, model.features, x).float().cpu())
    return torch.cat(parts).numpy()


def _save_features(path: Path, source: Problem, target: Problem, before: np.ndarray,
                   after: np.ndarray | None) -> None:
    """Write ``features.npz`` atomically; ``after`` is left out for method source_only."""
    labels = [s.y[_feature_index(len(s))].cpu() for s in (source.test, target.test)]
    data = {
        "before": before,
        "domain": np.concatenate([np.zeros(len(labels[0]), np.int8),
                                  np.ones(len(labels[1]), np.int8)]),
        "label": torch.cat(labels).numpy(),
        "domain_names": np.array([f"source: {source.name}", f"target: {target.name}"]),
    }
    if after is not None:
        data["after"] = after
    atomic_write(path, lambda f: np.savez_compressed(f, **data))


# --------------------------------------------------------------------------------------------------
# Prose and advice (what `tlroutes routes --explain`, the report and `tlroutes plan` say)
# --------------------------------------------------------------------------------------------------

PROSE = RouteProse(
    "Keep the task but move to a new domain given by a second dataset; the trunk is aligned "
    "across domains, with target labels (supervised) or without them (unsupervised: DANN, CORAL, "
    "MMD …).",
    example="ImageNet classifier → healthy/sick x-ray classifier",
    sharing=Sharing(stems="carried over", trunk="carried over, aligned across domains",
                    heads="carried over", stages="source → target"),
)


def recommend(problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> Advice:
    """The plan's advice: MCC, label-free selection; warns on differing class proportions."""
    recipe: dict[str, Any] = {"method": "mcc", "selection": "im"}
    why = {
        "method": ("MCC gained most among the alignment methods on built-in shifts "
                   "(benchmarks/RESULTS.md, domain adaptation)."),
        "selection": "Selects checkpoints without target labels (information maximisation).",
    }
    source, target = list(problems.values())[0], list(problems.values())[-1]
    pair = isinstance(source, Problem) and isinstance(target, Problem) and source is not target
    if pair and source.task.kind == target.task.kind == "classification":
        relation = label_relation(source, target)
        if relation.kind != "identical":
            # The label-set variants align with a domain discriminator (new_label_set refuses
            # MCC, CDAN and JAN: they compare class predictions over one shared label set;
            # partial and open_set build on DANN and note any other method as unread).
            recipe["method"] = "dann"
            why["method"] = (f"The label sets differ ({relation.describe()}): the variant for "
                             "them brings its own method (partial: class-weighted MCC; "
                             "open_set: source support or OSBP; new_label_set aligns trunk "
                             "features with DANN).")
    shifted = [p for p in (evidence.pairs if evidence else [])
               if p.domain.label_shift is not None and p.domain.label_shift.p_value < 0.05]
    if shifted:
        # Alignment matches the feature marginals, which is wrong when the class priors differ.
        warnings.append("The class proportions differ between source and target (χ² test): "
                        "feature alignment assumes they do not and may hurt; check the "
                        "source-only baseline.")
    return recipe, why


# --------------------------------------------------------------------------------------------------
# Report (the report's route section; see tlroutes.routes.registry for the protocol)
# --------------------------------------------------------------------------------------------------


REPORT_FILES: dict[str, str] = {
    "features.npz": "the feature maps need the trunk features a finished Domain Adaptation run "
    "saves (tlroutes versions before the report was added did not save them)",
}
"""Files of a finished run (in the first seed's folder) that the report reads, and why."""


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """The report's route section: method and selection, and maps of the trunk features.

    Args:
        run: what the run folder holds.
        tsne: draw t-SNE maps besides PCA. Default True (a few seconds per map on one core).
    """
    s = run.summary
    blocks: list[Block] = []
    if s is not None:
        d = s.details
        uses = (" (uses target validation labels)" if d.get("selection_uses_target_labels")
                else " (label-free on the target)")
        share = d.get("target_labels") or 0
        labels = f"{share:.0%} of the target's training labels" if share else "no target labels"
        variant = d.get("variant", "closed")  # runs from before the variants were closed
        why = f" ({d['variant_reason']})" if d.get("variant_reason") else ""
        blocks.append(Text(f"Variant **{variant}**{why}: {VARIANT_PROSE.get(variant, '')}"))
        blocks.append(Text(f"Method **{d.get('method', '?')}**, checkpoint selection "
                           f"**{d.get('selection', '?')}**{uses}, trained with {labels}."))
    features = run.files.get("features.npz")
    if features is None:
        blocks.append(Notice("No feature maps: features.npz is missing from the run folder "
                             "(a finished Domain Adaptation run saves it)."))
    else:
        from tlroutes.reporting import plots  # matplotlib and scikit-learn: only when drawn

        start = time.perf_counter()
        png, facts = plots.feature_maps_png(features, tsne=tsne)
        seconds = time.perf_counter() - start
        counts = ", ".join(f"{k} from {n}" for n, k in facts["samples"].items())
        blocks.append(Text(
            "Trunk features of test samples (" + counts + "), coloured by domain, before "
            "adaptation (the source-only model) and after. Aligned domains overlap; separate "
            "clouds mean the trunk still tells the domains apart. Axes have no units (PCA: the "
            "two main directions of variation; t-SNE: neighbourhoods). Drawn in "
            f"{seconds:.1f} s."))
        blocks.append(Image("feature-maps.png", png, "PCA and t-SNE maps of source and target "
                            "features before and after adaptation", id="feature-maps",
                            width=460 * len(facts["states"])))
    return blocks + details_blocks(run, shown={"method", "selection", "target_labels",
                                               "selection_uses_target_labels", "variant",
                                               "variant_reason"})


VARIANT_PROSE: dict[str, str] = {
    "closed": "one label set on both sides; the trunk is aligned across domains.",
    "partial": "the target holds only some of the source's classes; each source class is "
               "weighed by the target's mean prediction of it (PADA's weights, on class-weighted "
               "MCC by default or on PADA's discriminator), so absent classes stop pulling "
               "target features towards them.",
    "open_set": "the target holds classes the source lacks; an 'unknown' output is learned "
                "from the target samples no source sample resembles, the rest are aligned, and "
                "known-class accuracy (OS*) and unknown recall are reported apart.",
    "new_label_set": "target labels given for a label set of its own; a new head on the "
                     "source-trained stem and trunk.",
    "source_free": "no source data; the trained source model is adapted on the target alone "
                   "(SHOT).",
}
"""One line per variant for the report, after its name."""


#: The run file's top-level blocks this route reads besides those every run reads (route, order,
#: constraints, seed, seeds, recipe, hardware, tracking); another one set is refused at resolve.
# No `baseline`: the source-only baseline (and the target-supervised one, with target labels) is
# always measured, since it is what adaptation is judged against.
RUN_FILE_BLOCKS: frozenset[str] = frozenset(
    {"source", "target", "model", "source_training", "target_training"})
