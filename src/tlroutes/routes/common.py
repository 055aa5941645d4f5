"""What every route recipe shares: problems, models, supervised stages, test metrics, summaries."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tlroutes.config import RunSpec, format_validation_error
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route, route_for
from tlroutes.measure.placement import Placement, place
from tlroutes.objectives.tasks import primary_metric
from tlroutes.problem import Problem, Task
from tlroutes.summary import Summary
from tlroutes.train.from_spec import build, evaluate, load, supervised_stage

if TYPE_CHECKING:
    from tlroutes.model import TransferModel
    from tlroutes.train.engine import Trainer


class RecipeSpec(BaseModel):
    """Base of each route's ``recipe:`` block: unknown keys are errors, defaults documented."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def parse_recipe(cls: type[RecipeSpec], data: dict[str, Any], route: Route) -> RecipeSpec:
    """Validate a run file's ``recipe:`` block against the route's own fields."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls, f"recipe of {route.title}")) from None


def relation(source: Problem, target: Problem) -> tuple[str, str]:
    """The cube axes of two problems: (task, domain), each 'same' or 'different'.

    The placement ``tlroutes plan`` uses (:func:`tlroutes.measure.placement.place`): tasks are
    the same when their kinds agree; domains are declared by ``domain:`` in the run file, else
    measured, else (measurement undecided) the same when names, modality and sample shape
    agree. The measurement is cached, so a planned run does not measure twice.
    """
    placed = place(source, target)
    return placed.task.value, placed.domain.value


def require_fit(route: Route, source: Problem, target: Problem) -> None:
    """Raise :class:`ConfigError` when the two problems do not sit in ``route``'s cell, placed
    as ``tlroutes plan`` places them (:func:`tlroutes.measure.placement.place`): the route a
    plan names always fits, and a run refuses exactly the routes its plan would not name.

    Where declarations, data names and measurement disagree the placement's warnings are
    issued (``warnings.warn``) in plan's words. A measured domain is overridden by declaring
    ``domain:`` in the data blocks.
    """
    # named by role, as plan names them, so that a warning reads the same in plan and run
    placed = place(source, target, names=("source", "target"))
    _check_cell(route, placed, source, target, every=False)


def _check_cell(route: Route, placed: Placement, first: Problem, second: Problem, *,
                every: bool) -> None:
    """Warn as ``placed`` says, and refuse unless it is ``route``'s cell."""
    task, domain = placed.task.value, placed.domain.value
    for text in placed.warnings:
        warnings.warn(text, stacklevel=4)
    fits = route_for(task=task, domain=domain, order=route.order)
    if fits is route:
        return
    how = ("measured" if placed.domain.source == "measured" else
           "declared" if placed.domain_certain else "by the data names")
    # A measured domain is the one axis a user may overrule, by declaring it. A two-sample test
    # that finds no shift does not prove one distribution (a shift in P(y|x) alone is invisible
    # to it), nor is a measured shift a reason to refuse the route a user named: only facts
    # (task kinds, declared domains, modality and shape) refuse; a measured mismatch warns.
    measured_only = (placed.domain.source == "measured" and task == route.task
                     and not placed.domain_certain)
    hint = (" To place the domains yourself, declare `domain:` in the data blocks (the same "
            "name for one domain)." if measured_only else "")
    if measured_only:
        warnings.warn(
            f"The {route.title} route expects the {route.domain} domain, but "
            f"'{first.name}' and '{second.name}' measure as the {domain} domain "
            f"({placed.domain.detail.rstrip('.')}); {fits.title} would fit the measurement. "
            f"Running {route.title} as the run file names it.{hint}", stacklevel=4)
        return
    if every:
        raise ConfigError(
            f"The {route.title} route needs the {route.task} task and the {route.domain} "
            f"domain for every problem, but '{first.name}' and '{second.name}' have the {task} "
            f"task and the {domain} domain ({how}: {placed.domain.detail.rstrip('.')}). The "
            f"route that fits them is {fits.title} (route: {fits.value}).{hint}"
        )
    raise ConfigError(
        f"The {route.title} route needs the {route.task} task and the {route.domain} domain, but "
        f"source '{first.name}' ({first.task.kind}; domain '{first.domain.name}', "
        f"{first.domain.modality} {first.domain.input_shape}) and target '{second.name}' "
        f"({second.task.kind}; domain '{second.domain.name}', {second.domain.modality} "
        f"{second.domain.input_shape}) have the {task} task and the {domain} domain ({how}: "
        f"{placed.domain.detail.rstrip('.')}). The route that fits is {fits.title} "
        f"(route: {fits.value}).{hint}"
    )


def load_pair(route: Route, spec: RunSpec) -> tuple[Problem | None, Problem]:
    """The run's ``(source, target)`` problems, checked to sit in ``route``'s cell.

    The source is None with ``source: null`` (the pretrained trunk is then the source).
    """
    target = load(spec.target, spec.seed, "target")
    source = load(spec.source, spec.seed, "source") if spec.source is not None else None
    if source is not None:
        require_fit(route, source, target)
    return source, target


def pretrain(spec: RunSpec, trainer: Trainer, source: Problem | None,
             target: Problem) -> TransferModel:
    """The model of a sequential route: one stem, and a head ``"source"`` trained on the source
    in the stage ``"source"`` (none without a source: the pretrained trunk is the source)."""
    first = source or target
    trainer.seed_for("model")
    model = build(spec.model, {"input": first.domain}, {"source": first.task})
    if source is not None:
        trainer.fit(supervised_stage("source", model, source, spec.source_training, spec.seed,
                                     head="source"))
    return model


def scratch_baseline(spec: RunSpec, trainer: Trainer, target: Problem, *, epochs: int | None = None,
                     head_args: dict[str, Any] | None = None,
                     steps: int | None = None) -> dict[str, float] | None:
    """The target's test metrics of the same architecture trained from scratch on the target
    (stage ``"baseline"``, for ``epochs`` or ``steps`` when given, else the target's budget),
    or None when ``baseline: false``."""
    if not spec.baseline:
        return None
    trainer.seed_for("baseline-model")
    scratch = build(spec.model, {"input": target.domain}, {"target": target.task}, fresh=True,
                    head_args=head_args)
    overrides = ({"steps": steps, "epochs": None} if steps is not None
                 else {} if epochs is None else {"epochs": epochs})
    trainer.fit(supervised_stage("baseline", scratch, target, spec.target_training, spec.seed,
                                 **overrides))
    return evaluate(scratch, target.test, target.task)


def require_same_cell(route: Route, problems: dict[str, Problem]) -> None:
    """Raise :class:`ConfigError` unless every problem pairs with the first in ``route``'s
    cell, each pair placed as :func:`require_fit` places it."""
    names = list(problems)
    first = problems[names[0]]
    for name in names[1:]:
        placed = place(first, problems[name], names=(names[0], name))
        _check_cell(route, placed, first, problems[name], every=True)


def summarise(
    route: Route, task: Task | None, metrics: dict[str, float],
    baseline: dict[str, float] | None, *, primary: tuple[str, bool] | None = None,
    baseline_kind: str | None = None, baselines: dict[str, dict[str, float] | None] | None = None,
    carried_over: str = "", source: str | None = None, target: str | None = None,
    metric_note: str | None = None, baseline_note: str | None = None, **details: Any,
) -> Summary:
    """The run's :class:`~tlroutes.summary.Summary`: test metrics, the baseline's, the gain.

    ``gain`` is the primary metric's improvement over the baseline, signed so that positive
    means transfer helped (for a lower-is-better metric it is ``baseline - metric``);
    ``negative_transfer`` is true when it is below zero.

    Args:
        route: the route (its id and title name the summary).
        task: the task whose primary metric the gain is measured on; None with ``primary``.
        metrics, baseline: test metrics of the transferred model and of the baseline (None
            when no baseline was trained).
        primary: (name, higher is better) overriding the task's primary metric, e.g.
            ``("delta_m", True)`` for several tasks. Default None.
        baseline_kind, baselines: which of several ``baselines`` (by kind) ``baseline`` is.
            Default None and {}.
        carried_over, source, target, metric_note, baseline_note: see :class:`Summary`.
        details: the route's own facts. A ``control`` metrics dict (random-init control) and
            ``frozen_trunk_metrics`` also enter ``also``, as do the other ``baselines``.
    """
    name, higher = primary or primary_metric(task)
    gain = None
    if baseline is not None:
        diff = metrics[name] - baseline[name]
        gain = diff if higher else -diff
    baselines = dict(baselines or {})
    # Other comparisons a recipe measured (controls, alternative baselines), by primary metric.
    also = {key: value[name] for key, value in baselines.items()
            if value is not None and key != baseline_kind}
    if isinstance(details.get("control"), dict):
        also["random-init control"] = details["control"][name]
    frozen = details.get("frozen_trunk_metrics")
    if isinstance(frozen, dict) and frozen is not metrics:
        also["frozen trunk"] = frozen[name]
    return Summary(
        route=route.value, title=route.title, primary_metric=name, higher_is_better=higher,
        metrics=metrics, baseline=baseline, baseline_kind=baseline_kind, baselines=baselines,
        gain=gain, negative_transfer=None if gain is None else gain < 0, also=also,
        carried_over=carried_over, source=source, target=target, metric_note=metric_note,
        baseline_note=baseline_note, details=details,
    )


def mean_of(per: dict[str, dict[str, float]], key: str) -> float:
    """The mean of metric ``key`` over a dict of metrics dicts (one per source, domain …)."""
    return sum(m[key] for m in per.values()) / len(per)


def target_budget_note(spec: RunSpec) -> str:
    """How the baseline's budget was set, for the summary."""
    t = spec.target_training
    return f"{t.length()} × batch {t.batch_size} at lr {t.lr} on the target's train split"
