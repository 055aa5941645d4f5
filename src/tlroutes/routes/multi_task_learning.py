"""Multi-Task Learning: one domain, several tasks at once, on a shared trunk.

Different tasks, same domain, simultaneously (one camera feed → detection + lane marking).

Recipe:
1. Load the tasks' problems (one domain). Problems over the same inputs are joined so that a
   sample carries every task's label; otherwise samples carry only their own task's label and
   the others are masked out of the loss. Each group of tasks over one set of inputs is its own
   training stream, and every step draws a batch from each (LibMTL's multi-input mode): a task
   with few samples of its own still gets a full batch every step, where one mixed stream would
   give it its share of the samples (2 % of the batch for 100 samples beside 4,900), and the
   epoch is a pass over the longest stream. A training sample of one task whose input is a
   validation or test input of another task is dropped (for the single-task baselines too):
   the shared trunk would otherwise train on the other task's held-out inputs. The summary's
   ``cross_task_overlap`` counts the drops per task.
2. Baselines first: one single-task model per task — the reference Δm is measured against
   (never against an untrained model) — each given as many optimizer steps as the joint stage
   at the same batch size (``baseline_epochs`` in the summary): when tasks have inputs of their
   own, the joint stage's epoch is a pass over the longest stream, and equal epochs would leave
   a smaller task's baseline with a fraction of the joint model's steps. With separate streams
   a task's baseline sees its samples exactly as often as the joint model does.
3. ``joint``: a shared stem and trunk, one head per task (classification, multilabel and
   regression mixed freely); the task losses are combined by a weighting (``weighting``: ew,
   uw, dwa, gradnorm, pcgrad, mgda, cagrad, nash_mtl, rlw, or TorchJD's upgrad, dualproj,
   imtl_g, aligned_mtl, fairgrad with the torchjd extra; see :mod:`tlroutes.objectives.mtl`);
   selection on validation Δm. ``architecture`` says how the tasks share the trunk: ``hard``
   (default: one trunk, read by every head), or MMoE, PLE, MTAN or cross-stitch, which give
   each task its own features from shared parts (see :mod:`tlroutes.backbones.sharing`).
4. Reported: each task's test metrics, the single-task baselines', and
   Δm = (1/K) Σ_k (−1)^{l_k} (M_k − B_k) / B_k × 100 (l_k = 1 when lower is better; Maninis et
   al., CVPR 2019).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn

from tlroutes.backbones import create_trunk
from tlroutes.backbones.sharing import (
    HARD,
    check_sharing_args,
    check_sharing_fits,
    sharing_name,
)
from tlroutes.config import RunSpec, TrainSpec
from tlroutes.errors import ConfigError, DataError
from tlroutes.matrix import Route, route_for
from tlroutes.model import TransferModel, build_model
from tlroutes.objectives.mtl import (
    available_weightings,
    check_weighting_args,
    create_weighting,
    weighting_info,
    weighting_name,
)
from tlroutes.objectives.tasks import primary_metric, task_loss, task_metrics
from tlroutes.problem import Problem, Split, Task
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block, Cell, Notice, Table, Text
from tlroutes.reporting.tables import (
    NEGATIVE,
    fmt_values,
    higher_is_better,
    seed_values,
)
from tlroutes.routes import auxiliary
from tlroutes.routes.common import RecipeSpec, relation, summarise
from tlroutes.routes.registry import Advice, RouteProse, Sharing
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer, evaluate_split
from tlroutes.train.from_spec import build, evaluate, load, stage, stream, supervised_stage
from tlroutes.train.streams import Stream

if TYPE_CHECKING:
    from tlroutes.measure.evidence import Evidence

ROUTE = Route.MULTI_TASK_LEARNING

NASH_MTL_UP_TO = 4
"""Tasks up to which the plan recommends Nash-MTL; above it, MGDA-UB (one backward pass)."""


class Recipe(RecipeSpec):
    """Multi-Task Learning settings (the run file's ``recipe:`` block)."""

    weighting: str = Field(
        "ew", description="How task losses combine: 'ew' (equal, default), 'uw' (uncertainty), "
        "'dwa', 'gradnorm', 'pcgrad', 'mgda' (with the MGDA-UB bound), 'cagrad', 'nash_mtl', "
        "'rlw' (random loss weighting); with the torchjd extra also TorchJD's 'upgrad', "
        "'dualproj', 'imtl_g', 'aligned_mtl', 'fairgrad'.",
    )
    weighting_args: dict[str, Any] = Field(
        default_factory=dict, description="Arguments of the weighting (e.g. {c: 0.4} for "
        "cagrad). Default {}.",
    )

    architecture: str = Field(
        HARD, description="How the tasks share the trunk: 'hard' (default: one trunk read by "
        "every head), 'mmoe' (expert trunks mixed by one gate per task), 'ple' (shared and "
        "per-task experts, per-task gates; CGC at levels: 1), 'mtan' (per-task attention masks "
        "at each stage of a cnn2d/cnn1d trunk) or 'cross_stitch' (one cnn2d/cnn1d trunk per "
        "task, mixed after each stage). The single-task baselines are always plain models.",
    )
    architecture_args: dict[str, Any] = Field(
        default_factory=dict, description="Arguments of the architecture: mmoe {experts: 4}; "
        "ple {shared_experts: 2, task_experts: 1, levels: 1}; cross_stitch {self_weight: 0.9}; "
        "mtan none. Default {} (those defaults).",
    )

    ablation: bool = Field(
        False, description="With a main task (importance:) and two or more auxiliaries: also "
        "train the main task with each auxiliary alone, for the same steps, and report "
        "whether each auxiliary helps (main alone, main + each auxiliary, main + all; "
        "run with seeds: 3 or more for a spread). Default false.",
    )

    @field_validator("architecture")
    @classmethod
    def _registered_architecture(cls, name: str) -> str:
        return sharing_name(name)

    @field_validator("architecture_args")
    @classmethod
    def _architecture_args(cls, args: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "architecture" in info.data:
            check_sharing_args(info.data["architecture"], args)
        return args

    @field_validator("weighting")
    @classmethod
    def _registered_weighting(cls, name: str) -> str:
        # the registry's own name check: unknown names get the nearest registered one
        return weighting_name(name)

    @field_validator("weighting_args")
    @classmethod
    def _accepted_args(cls, args: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "weighting" in info.data:  # absent when the name itself was refused
            check_weighting_args(info.data["weighting"], args)
        return args


class Joined:
    """Several tasks' labels over one set of inputs, packed into one float target tensor.

    Columns: for each task its target (1 column for a class index, K for multilabel or
    regression), then one mask column per task (1 = labelled).
    """

    def __init__(self, tasks: dict[str, Task]) -> None:
        self.tasks = tasks
        widths = [1 if t.kind == "classification" else t.num_outputs for t in tasks.values()]
        starts = [sum(widths[:i]) for i in range(len(widths))]
        self.columns = {n: (s, s + w) for n, s, w in zip(tasks, starts, widths, strict=True)}
        self.mask_start = sum(widths)

    def pack(self, groups: list[tuple[Tensor, dict[str, Tensor]]]) -> Split:
        """Inputs and targets of sample groups (each: inputs and the labels it carries)."""
        xs, ys = [], []
        for x, labels in groups:
            y = torch.zeros(len(x), self.mask_start + len(self.tasks))
            for i, (name, (a, b)) in enumerate(self.columns.items()):
                if name in labels:
                    y[:, a:b] = labels[name].float().reshape(len(x), b - a)
                    y[:, self.mask_start + i] = 1.0
            xs.append(x)
            ys.append(y)
        return Split(torch.cat(xs), torch.cat(ys))

    def unpack(self, y: Tensor, name: str) -> tuple[Tensor, Tensor]:
        """``name``'s targets (as its task expects them) and its label mask."""
        a, b = self.columns[name]
        mask = y[:, self.mask_start + list(self.tasks).index(name)] > 0.5
        target = y[:, a].long() if self.tasks[name].kind == "classification" else y[:, a:b]
        return target, mask


class MultiTaskStep(nn.Module):
    """Per-task losses on the shared features; the weighting turns them into gradients."""

    def __init__(self, model: TransferModel, joined: Joined, weighting: nn.Module) -> None:
        super().__init__()
        self.model, self.joined, self.weighting = model, joined, weighting

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]):
        # one batch per input group (see train_streams), learned from as one batch
        parts = list(batch.values())
        x = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
        y = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
        out = self.model.task_features(x)  # per task: the same tensor under hard sharing
        losses: list[Tensor | None] = []
        for name, task in self.joined.tasks.items():
            target, mask = self.joined.unpack(y, name)
            has = bool(mask.any())
            features = out.per_task[name]
            losses.append(task_loss(task, self.model.heads[name](features[mask]), target[mask])
                          if has else None)
        return (losses, out.shared), {}

    def backward(self, out) -> tuple[Tensor, dict[str, Tensor]]:
        losses, features = out
        shared = self.model.shared_parameters()  # less a task's own gates/experts/masks
        logs = self.weighting.backward(losses, shared, shared_features=features)
        total = sum(loss.detach() for loss in losses if loss is not None)
        weights = logs["weights"]
        return total, {f"weight_{n}": weights[i] for i, n in enumerate(self.joined.tasks)}


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Run the recipe; returns the summary (see :func:`tlroutes.routes.common.summarise`)."""
    if len(spec.problems) < 2:
        raise ConfigError("Multi-Task Learning needs at least two tasks under `problems:`, e.g. "
                          "problems: {digit: {task: digit}, position: {task: position, canvas: "
                          "16}} (with the same inputs: same dataset, canvas, n and seed).")
    problems = {name: load(d, spec.seed, name) for name, d in spec.problems.items()}
    _require_fit(problems)
    overlap = drop_cross_task_overlap(problems)
    if trainer.fabric.world_size > 1 and weighting_info(recipe.weighting).gradient_based:
        plain = [n for n in available_weightings() if not weighting_info(n).gradient_based]
        raise ConfigError(f"weighting '{recipe.weighting}' combines per-task gradients in one "
                          "process; run it with hardware.devices: 1, or use "
                          f"{', '.join(plain)}.")
    tasks = {name: p.task for name, p in problems.items()}
    main = spec.main_task
    auxiliary.check_recipe(recipe.weighting, recipe.weighting_args, recipe.ablation, main,
                           list(tasks))
    m = spec.model
    check_sharing_fits(recipe.architecture, lambda: create_trunk(m.trunk, **m.trunk_args),
                       list(tasks), **recipe.architecture_args)
    joined = Joined(tasks)
    splits = {s: joined.pack(_groups(problems, s)) for s in ("train", "val", "test")}
    check_labelled(joined, splits)
    first = next(iter(problems.values()))
    t = spec.training

    baseline = None
    baseline_epochs: dict[str, int] = {}
    if spec.baseline:
        baseline = {}
        for name, problem in problems.items():
            if main is not None and name != main:
                continue  # auxiliary tasks are there for the main task: no baseline of theirs
            trainer.seed_for("baseline", name)
            single = build(spec.model, {"input": first.domain}, {name: problem.task},
                           fresh=True)
            single_t = t
            if t.steps is None:  # a steps budget is the same for every problem
                epochs = matched_epochs(longest_stream(problems), len(problem.train), t)
                baseline_epochs[name] = epochs
                single_t = t.model_copy(update={"epochs": epochs})
            trainer.fit(supervised_stage(f"single-{name}", single, problem, single_t,
                                         spec.seed))
            baseline[name] = {"val": evaluate(single, problem.val, problem.task),
                              "test": evaluate(single, problem.test, problem.task)}

    reference = None if baseline is None else {n: b["val"] for n, b in baseline.items()}
    model, joined, splits = _fit_joint(spec, recipe, trainer, problems, "joint", t, reference)
    trainer.save_model(model)
    per_task = _per_task(model, joined, splits["test"])
    if main is not None:
        return _main_task_summary(spec, recipe, trainer, problems, per_task, baseline,
                                  overlap, baseline_epochs, longest_stream(problems))

    test_reference = None if baseline is None else {n: b["test"] for n, b in baseline.items()}
    delta = delta_m(per_task, test_reference, tasks) if test_reference else None
    summary = summarise(ROUTE, None, {"delta_m": delta if delta is not None else 0.0},
                        None if delta is None else {"delta_m": 0.0}, primary=("delta_m", True),
                        carried_over=f"{_shared_words(recipe)}; one head per task",
                        per_task=per_task, per_task_baseline=test_reference,
                        weighting=recipe.weighting, architecture=recipe.architecture,
                        delta_m=delta,
                        cross_task_overlap=overlap, baseline_epochs=baseline_epochs,
                        metric_note="metrics.delta_m: Δm in percent against the single-task "
                        "baselines the run trained itself (positive = multi-task helps)")
    return summary


def _fit_joint(spec: RunSpec, recipe: Recipe, trainer: Trainer, problems: dict[str, Problem],
               name: str, t: TrainSpec, reference: dict[str, dict[str, float]] | None,
               ) -> tuple[TransferModel, Joined, dict[str, Split]]:
    """Train one joint model over ``problems`` (stage ``name``); with a main task, selection is
    on the main task's validation metric, else on Δm (or the mean score without baselines)."""
    tasks = {n: p.task for n, p in problems.items()}
    joined = Joined(tasks)
    splits = {s: joined.pack(_groups(problems, s)) for s in ("train", "val", "test")}
    first = next(iter(problems.values()))
    m, main = spec.model, spec.main_task
    trainer.seed_for("model" if name == "joint" else name)
    model = build_model({"input": first.domain}, tasks, m.trunk, m.trunk_args, m.stem,
                        m.stem_args, sharing=recipe.architecture,
                        sharing_args=recipe.architecture_args)
    weighting = create_weighting(recipe.weighting, num_tasks=len(tasks), **auxiliary.weighting_args(
        recipe.weighting, recipe.weighting_args, list(tasks), main, t.lr, list(spec.problems)))
    if main is not None and hasattr(weighting, "attach"):  # Auto-Lambda's validation loss
        weighting.attach(auxiliary.validation_loss(model, problems[main].val, tasks[main], main,
                                                   t.batch_size, spec.seed))
    step = MultiTaskStep(model, joined, weighting)
    if main is not None:
        key, higher = primary_metric(tasks[main])
        monitor, mode = f"{main}_{key}", "max" if higher else "min"
        reference = None
    else:
        monitor, mode = ("delta_m" if reference else "mean_score"), "max"
    trainer.fit(stage(
        name, step, train_streams(problems, joined, t, spec.seed, name),
        lambda: _score(model, joined, splits["val"], reference), first.task, t,
        monitor=monitor, mode=mode, backward=step.backward,
        on_epoch_end=getattr(weighting, "end_epoch", None)))
    return model, joined, splits


def _main_task_summary(spec: RunSpec, recipe: Recipe, trainer: Trainer,
                       problems: dict[str, Problem], per_task: dict[str, dict[str, float]],
                       baseline: dict[str, dict[str, dict[str, float]]] | None,
                       overlap: dict[str, int], baseline_epochs: dict[str, int],
                       joint_n: int) -> Summary:
    """The summary of an auxiliary-task run: the main task's test metrics against the main task
    trained alone for the same steps, and (``recipe.ablation``) main + each auxiliary."""
    main = spec.main_task
    assert main is not None
    task = problems[main].task
    key, higher = primary_metric(task)
    base = None if baseline is None else baseline[main]["test"]
    details: dict[str, Any] = {}
    if recipe.ablation:
        each = {}
        for aux in (n for n in problems if n != main):
            pair = {main: problems[main], aux: problems[aux]}
            pair_n = longest_stream(pair)
            t = spec.training
            if t.steps is None:  # the same steps as the run's joint stage
                t = t.model_copy(update={"epochs": matched_epochs(joint_n, pair_n, t)})
            model, joined, splits = _fit_joint(spec, recipe, trainer, pair, f"with-{aux}", t,
                                               None)
            each[aux] = _per_task(model, joined, splits["test"])[main][key]
        details["ablation"] = auxiliary.ablation_rows(
            None if base is None else base[key], each, per_task[main][key])
    return summarise(
        ROUTE, task, per_task[main], base,
        carried_over=f"{_shared_words(recipe)}; one head per task; auxiliary tasks serve "
        f"'{main}'", per_task=per_task, per_task_baseline=None if base is None else {main: base},
        main_task=main, importance={n: ("main" if n == main else "auxiliary") for n in problems},
        weighting=recipe.weighting, architecture=recipe.architecture,
        cross_task_overlap=overlap, baseline_epochs=baseline_epochs, **details,
        metric_note=f"metrics: the main task '{main}' on its test split (selected on its "
        "validation metric); the auxiliary tasks' metrics are in per_task",
        baseline_note=f"baseline: '{main}' trained alone for the same number of steps")


def _shared_words(recipe: Recipe) -> str:
    """What the tasks share, in words (the summary's ``carried_over``)."""
    if recipe.architecture == HARD:
        return "stem and trunk shared"
    return f"stem shared; trunk shared as {recipe.architecture}"


def train_streams(problems: dict[str, Problem], joined: Joined, train: TrainSpec, seed: int,
                  name: str) -> dict[str, Stream]:
    """One training stream per group of tasks over the same inputs; every step draws
    ``train.batch_size`` samples from each. The first keeps the stage's own name (and so its
    shuffling seed): tasks over one set of inputs train exactly as with a single stream."""
    groups = _groups(problems, "train")
    return {("train" if i == 0 else f"train-{i}"):
            stream(joined.pack([group]), train, seed, name if i == 0 else f"{name}-{i}")
            for i, group in enumerate(groups)}


def longest_stream(problems: dict[str, Problem]) -> int:
    """Training samples in the longest of :func:`train_streams`' streams (which sets the joint
    stage's epoch)."""
    return max(len(x) for x, _ in _groups(problems, "train"))


def matched_epochs(joint_n: int, single_n: int, train: TrainSpec) -> int:
    """Epochs over ``single_n`` samples that take as many steps as ``train.epochs`` over
    ``joint_n`` — the joint stage's longest stream — (batches as a :class:`Stream` makes them;
    at least one epoch)."""
    def steps(n: int) -> int:
        return math.ceil(n / min(train.batch_size, n))

    return max(1, round(train.epochs * steps(joint_n) / steps(single_n)))


def drop_cross_task_overlap(problems: dict[str, Problem]) -> dict[str, int]:
    """Drop from each problem's train split the inputs held out (val/test) by another problem.

    Inputs are compared exactly (bytes of the sample). Returns the count dropped per problem;
    problems over identical inputs drop nothing (their splits are one split of the same data).
    """
    def keys(x: Tensor) -> list[bytes]:
        flat = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
        return [row.tobytes() for row in flat]

    held = {name: set(keys(p.val.x)) | set(keys(p.test.x)) for name, p in problems.items()}
    dropped = {}
    for name, problem in problems.items():
        others = set().union(*(h for other, h in held.items() if other != name))
        keep = [i for i, k in enumerate(keys(problem.train.x)) if k not in others]
        dropped[name] = len(problem.train) - len(keep)
        if dropped[name]:
            problem.train = problem.train.subset(torch.tensor(keep, dtype=torch.long))
        if len(problem.train) == 0:
            raise DataError(f"Every training input of '{name}' is a validation or test input of "
                            "another task; give the tasks separate data or the same inputs.")
    return dropped


def delta_m(metrics: dict[str, dict[str, float]], reference: dict[str, dict[str, float]],
            tasks: dict[str, Task]) -> float:
    """Δm (percent): the mean relative change of each task's primary metric over its reference,
    signed so that positive is better (Maninis et al., CVPR 2019)."""
    total = 0.0
    for name, task in tasks.items():
        key, higher = primary_metric(task)
        base = reference[name][key]
        change = (metrics[name][key] - base) / max(abs(base), 1e-12)
        total += change if higher else -change
    return 100.0 * total / len(tasks)


def check_labelled(joined: Joined, splits: dict[str, Split]) -> None:
    """Raise :class:`DataError` when a task has no labelled sample in some split."""
    for split_name, split in splits.items():
        for name in joined.tasks:
            if not bool(joined.unpack(split.y, name)[1].any()):
                raise DataError(f"Task '{name}' has no labelled sample in the {split_name} "
                                "split; every task needs labels in train, val and test.")


def _require_fit(problems: dict[str, Problem]) -> None:
    names = list(problems)
    first = problems[names[0]]
    for name in names[1:]:
        task, domain = relation(first, problems[name])
        if domain != "same":
            fits = route_for(task="different", domain="different", order="simultaneous")
            raise ConfigError(
                f"Multi-Task Learning needs one domain, but '{names[0]}' "
                f"({first.domain.name}) and '{name}' ({problems[name].domain.name}) differ. "
                f"The route for different tasks on different domains is {fits.title} "
                f"(route: {fits.value}); for one task on several domains, weight_sharing."
            )
        if problems[name].task == first.task or (
                task == "same" and problems[name].task.labels == first.task.labels):
            raise ConfigError(
                f"'{names[0]}' and '{name}' are the same task; merging datasets of one task is "
                "the Dataset Merging route (route: dataset_merging)."
            )


def _groups(problems: dict[str, Problem], split: str) -> list[tuple[Tensor, dict[str, Tensor]]]:
    """Join problems whose ``split`` has identical inputs into one group of samples."""
    groups: list[tuple[Tensor, dict[str, Tensor]]] = []
    for name, problem in problems.items():
        s = getattr(problem, split)
        for x, labels in groups:
            if x.shape == s.x.shape and torch.equal(x, s.x):
                labels[name] = s.y
                break
        else:
            groups.append((s.x, {name: s.y}))
    return groups


def _per_task(model: TransferModel, joined: Joined, split: Split) -> dict[str, dict[str, float]]:
    names = list(joined.tasks)

    def heads(x: Tensor) -> Tensor:  # every head's outputs side by side, each on its features
        per_task = model.task_features(x, tasks=names).per_task
        return torch.cat([model.heads[n](per_task[n]) for n in names], 1)

    outputs = evaluate_split(model, heads, split.x)
    widths = [t.num_outputs for t in joined.tasks.values()]
    out = {}
    for (name, task), scores in zip(joined.tasks.items(), outputs.split(widths, 1), strict=True):
        target, mask = joined.unpack(split.y.to(outputs.device), name)
        if not bool(mask.any()):
            raise DataError(f"task '{name}' has no labelled sample in this split.")
        out[name] = task_metrics(task, scores[mask], target[mask])
    return out


def _score(model, joined, split, reference) -> dict[str, float]:
    per = _per_task(model, joined, split)
    scores = {f"{n}_{k}": v for n, m in per.items() for k, v in m.items()}
    if reference is not None:
        scores["delta_m"] = delta_m(per, reference, joined.tasks)
    signed = [per[n][k] if higher else -per[n][k]
              for n, t in joined.tasks.items() for k, higher in [primary_metric(t)]]
    scores["mean_score"] = sum(signed) / len(signed)
    return scores


# --------------------------------------------------------------------------------------------------
# Prose and advice (what `tlroutes routes --explain`, the report and `tlroutes plan` say)
# --------------------------------------------------------------------------------------------------

PROSE = RouteProse(
    "Learn several tasks on one domain at once: a shared backbone feeds one head per task.",
    example="one camera feed → object detection + lane marking",
    sharing=Sharing(stems="one, shared", trunk="shared",
                    heads="one per task", stages="one joint stage"),
)


def recommend(problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> Advice:
    """The plan's advice: the gradient weighting by the number of tasks."""
    k = len(problems)
    # Nash-MTL solves a K×K bargaining problem per step, so its cost grows with the task count.
    few = k <= NASH_MTL_UP_TO
    recipe: dict[str, Any] = {"weighting": "nash_mtl" if few else "mgda"}
    why = {"weighting": f"{k} tasks: " + (
        "Nash-MTL's exact bargaining is affordable." if few
        else "MGDA-UB's single backward pass keeps the cost down.")}
    if not few:
        recipe["weighting_args"] = {"upper_bound": True}
    return recipe, why


def recommend_importance(main: str, auxiliaries: list[str]) -> Advice:
    """The plan's advice when ``importance:`` names a main task: Auto-Lambda, whose weights
    are learned on the main task's validation loss (an auxiliary that does not help it is
    weighted toward 0), and the ablation when there are two auxiliaries or more."""
    recipe: dict[str, Any] = {"weighting": "auto_lambda"}
    why = {"weighting": f"'{main}' is the main task: Auto-Lambda learns each auxiliary's "
           "weight on the main task's validation loss (gradsim, the cheaper choice, drops an "
           "auxiliary's gradient when it points away from the main task's)."}
    if len(auxiliaries) >= 2:
        recipe["ablation"] = True
        why["ablation"] = (f"{len(auxiliaries)} auxiliaries: train the main task with each "
                           "alone to see which ones help (run with seeds: 3 for a spread).")
    return recipe, why


# --------------------------------------------------------------------------------------------------
# Report (the report's route section; see tlroutes.routes.registry for the protocol)
# --------------------------------------------------------------------------------------------------


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """The report's route section: each task against its single-task baseline, and Δm."""
    s = run.summary
    if s is None:
        return details_blocks(run)
    rows = []
    for task, metrics in (s.details.get("per_task") or {}).items():
        for i, name in enumerate(metrics):
            mine = seed_values(s, "per_task", task, name)
            base = seed_values(s, "per_task_baseline", task, name)
            change, style = "-", ""
            if mine and base:
                diff = [a - b for a, b in zip(mine, base, strict=False)]
                signed = [d if higher_is_better(name) else -d for d in diff]
                change = fmt_values(signed, sign=True)
                style = "bad" if sum(signed) < 0 else "good"
            rows.append([task if i == 0 else "", name, Cell(fmt_values(mine), "strong"),
                         fmt_values(base), Cell(change, style if i == 0 else "")])
    blocks: list[Block] = [Table(
        ["task", "metric", "multi-task", "single-task baseline", "better by"], rows,
        id="per-task", caption="Test metrics per task; 'better by' is signed so that positive "
        "means the multi-task model is better.")]
    delta = seed_values(s, "delta_m")
    if delta:
        bad = sum(delta) < 0
        what = "multi-task learning hurt on average" if bad else "multi-task learning helped"
        blocks.append(Notice(
            f"**Δm = {fmt_values(delta, digits=2, sign=True)} %** ({what}): the mean relative "
            "change of each task's primary metric against its single-task baseline, signed so "
            "that positive is better." + (f" **{NEGATIVE}**." if bad else ""),
            "bad" if bad else "good"))
    if s.details.get("weighting"):
        blocks.append(Text(f"Task weighting: **{s.details['weighting']}**."))
    main = s.details.get("main_task")
    if main:
        blocks.append(Text(f"Main task: **{main}**; the others are auxiliary. The run's metric, "
                           "its selection and its baseline (the main task alone, same steps) "
                           "are the main task's."))
    ablation = [one.get("ablation") for one in s.per_seed or [s]]
    ablation = [a for a in ablation if isinstance(a, dict)]
    if ablation:
        blocks.extend(auxiliary.ablation_blocks(ablation, s.primary_metric,
                                                s.higher_is_better))
    return blocks + details_blocks(run, shown={"per_task", "per_task_baseline", "delta_m",
                                               "weighting", "main_task", "importance",
                                               "ablation"})


#: The run file's top-level blocks this route reads besides those every run reads (route, order,
#: constraints, seed, seeds, recipe, hardware, tracking); another one set is refused at resolve.
RUN_FILE_BLOCKS: frozenset[str] = frozenset(
    {"problems", "model", "training", "baseline", "importance"})

#: hardware.precision values refused at resolve, before any stage trains: the joint stage's
#: weighting makes its own gradients, past the loss scaler float16 needs.
REFUSED_PRECISIONS: dict[str, str] = {
    "16-mixed": "the weighting makes the gradients itself, past the loss scaler that float16 "
                "needs; use 'bf16-mixed' (bfloat16 needs no scaling) or '32-true'"}
