"""What every route recipe shares: problems, models, supervised stages, test metrics, summaries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from tlroutes.config import DataSpec, ModelSpec, RunSpec, TrainSpec, format_validation_error
from tlroutes.data.load import load_problem
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route, route_for
from tlroutes.model import TransferModel, build_model
from tlroutes.objectives.tasks import primary_metric, task_metrics
from tlroutes.problem import Domain, Problem, Split, Task
from tlroutes.train.engine import Stage, evaluate_split
from tlroutes.train.seeding import derive_seed
from tlroutes.train.steps import SupervisedStep
from tlroutes.train.streams import Stream


class RecipeSpec(BaseModel):
    """Base of each route's ``recipe:`` block: unknown keys are errors, defaults documented."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def parse_recipe(cls: type[RecipeSpec], data: dict[str, Any], route: Route) -> RecipeSpec:
    """Validate a run file's ``recipe:`` block against the route's own fields."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls, f"recipe of {route.title}")) from None


def load(spec: DataSpec, run_seed: int, role: str) -> Problem:
    """Load the problem a run file's ``source`` or ``target`` block describes."""
    return load_problem(spec, run_seed if spec.seed is None else spec.seed, role)


def build(
    m: ModelSpec, domains: dict[str, Domain], tasks: dict[str, Task], *, fresh: bool = False,
    head_args: dict[str, Any] | None = None,
) -> TransferModel:
    """Build the run file's model for these domains (stems) and tasks (heads).

    Args:
        m: the run file's ``model`` block. ``model.weights``, when given, is loaded into the
            trunk (mismatched keys are named).
        domains, tasks: one stem per domain, one head per task, by key.
        fresh: the same architecture from scratch — no weights file, and every layer of a
            pretrained trunk re-initialised (the honest baseline). Default False.
        head_args: arguments of every head (e.g. ``{"hidden": 128}``). Default none.
    """
    model = build_model(domains, tasks, m.trunk, m.trunk_args, m.stem, m.stem_args,
                        head_args=head_args)
    if fresh:
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    elif m.weights:
        from tlroutes.backbones.pretrained import load_pretrained

        load_pretrained(model.trunk, m.weights)
    return model


def evaluate(model: nn.Module, split: Split, task: Task, stem=None, head=None) -> dict[str, float]:
    """``task``'s metrics of ``model(x, stem, head)`` over ``split``."""
    out = evaluate_split(model, lambda x: model(x, stem, head), split.x)
    return task_metrics(task, out, split.y.to(out.device))


def stage(
    name: str, step: nn.Module, streams: dict[str, Stream], validate, task: Task,
    train: TrainSpec, **overrides: Any,
) -> Stage:
    """A :class:`Stage` with the run file's training settings, monitoring ``task``'s metric."""
    metric, higher = primary_metric(task)
    settings = train.model_dump(exclude={"batch_size"})
    settings.update(overrides)
    settings.setdefault("monitor", metric)
    settings.setdefault("mode", "max" if higher else "min")
    return Stage(name=name, step=step, streams=streams, validate=validate, **settings)


def stream(split: Split, train: TrainSpec, seed: int, name: str) -> Stream:
    """A shuffled training stream over ``split`` with the stage's batch size."""
    return Stream(split, train.batch_size, seed=derive_seed(seed, name, "stream"), name=name)


def supervised_stage(
    name: str,
    model: nn.Module,
    problem: Problem,
    train: TrainSpec,
    seed: int,
    stem: str | None = None,
    head: str | None = None,
    **overrides: Any,
) -> Stage:
    """A stage that trains ``model`` on ``problem``'s train split, selecting on its validation."""
    return stage(
        name,
        SupervisedStep(model, problem.task, stem=stem, head=head),
        {"train": stream(problem.train, train, seed, name)},
        lambda: evaluate(model, problem.val, problem.task, stem, head),
        problem.task, train, **overrides,
    )


def relation(source: Problem, target: Problem) -> tuple[str, str]:
    """The declared cube axes of two problems: (task, domain), each 'same' or 'different'.

    Tasks are the same when their kinds agree. Domains are the same when their names, modality
    and sample shape agree (a shifted copy of a dataset gets another name; set ``domain:`` in
    the run file to declare two datasets one domain). ``tlroutes inspect`` measures instead.
    """
    task = "same" if source.task.kind == target.task.kind else "different"
    a, b = source.domain, target.domain
    same_domain = (a.name, a.modality, a.input_shape) == (b.name, b.modality, b.input_shape)
    return task, "same" if same_domain else "different"


def require_fit(route: Route, source: Problem, target: Problem) -> None:
    """Raise :class:`ConfigError` when the two problems do not sit in ``route``'s cell."""
    task, domain = relation(source, target)
    fits = route_for(task=task, domain=domain, order=route.order)
    if fits is route:
        return
    raise ConfigError(
        f"The {route.title} route needs the {route.task} task and the {route.domain} domain, but "
        f"source '{source.name}' ({source.task.kind}; domain '{source.domain.name}', "
        f"{source.domain.modality} {source.domain.input_shape}) and target '{target.name}' "
        f"({target.task.kind}; domain '{target.domain.name}', {target.domain.modality} "
        f"{target.domain.input_shape}) have the {task} task and the {domain} domain. The route "
        f"that fits is {fits.title} (route: {fits.value})."
    )


def require_same_cell(route: Route, problems: dict[str, Problem]) -> None:
    """Raise :class:`ConfigError` unless every problem pairs with the first in ``route``'s cell."""
    names = list(problems)
    first = problems[names[0]]
    for name in names[1:]:
        task, domain = relation(first, problems[name])
        fits = route_for(task=task, domain=domain, order=route.order)
        if fits is not route:
            raise ConfigError(
                f"The {route.title} route needs the {route.task} task and the {route.domain} "
                f"domain for every problem, but '{names[0]}' and '{name}' have the {task} task "
                f"and the {domain} domain. The route that fits them is {fits.title} "
                f"(route: {fits.value})."
            )


def summarise(
    route: Route, task: Task | None, metrics: dict[str, float],
    baseline: dict[str, float] | None, *, primary: tuple[str, bool] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``summary.json`` content: route, test metrics, the baseline's, and the gain.

    ``gain`` is the primary metric's improvement over the baseline, signed so that positive
    means transfer helped (for a lower-is-better metric it is ``baseline - metric``);
    ``negative_transfer`` is true when it is below zero. ``primary`` (name, higher is better)
    overrides the task's primary metric, e.g. ``("delta_m", True)`` for several tasks.
    """
    name, higher = primary or primary_metric(task)
    summary: dict[str, Any] = {
        "route": route.value,
        "route_title": route.title,
        "primary_metric": name,
        "higher_is_better": higher,
        "metrics": metrics,
        "baseline": baseline,
        "gain": None,
        "negative_transfer": None,
    }
    if baseline is not None:
        diff = metrics[name] - baseline[name]
        summary["gain"] = diff if higher else -diff
        summary["negative_transfer"] = summary["gain"] < 0
    summary.update(extra)
    # Other comparisons a recipe measured (controls, alternative baselines), by primary metric.
    summary["also"] = {
        key: value[name] for key, value in extra.get("baselines", {}).items()
        if value is not None and value is not baseline
    }
    if isinstance(extra.get("control"), dict):
        summary["also"]["random-init control"] = extra["control"][name]
    if "frozen_trunk_metrics" in extra and extra["frozen_trunk_metrics"] is not metrics:
        summary["also"]["frozen trunk"] = extra["frozen_trunk_metrics"][name]
    return summary


def target_budget_note(spec: RunSpec) -> str:
    """How the baseline's budget was set, for the summary."""
    t = spec.target_training
    return f"{t.epochs} epochs × batch {t.batch_size} at lr {t.lr} on the target's train split"
