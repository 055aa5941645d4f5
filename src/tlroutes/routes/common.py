"""What every route recipe shares: problems, models, supervised stages, test metrics, summaries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tlroutes.config import RunSpec, format_validation_error
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route, route_for
from tlroutes.objectives.tasks import primary_metric
from tlroutes.problem import Problem, Task

# The run file's blocks made into problems, models, stages and test metrics live in the training
# layer (so that training code uses them without importing routes); re-exported for the routes.
from tlroutes.train.from_spec import (  # noqa: F401
    build,
    evaluate,
    load,
    stage,
    stream,
    supervised_stage,
)


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
