"""What every route recipe shares: loading problems, supervised stages, test metrics, summaries."""

from __future__ import annotations

from typing import Any

from torch import nn

from tlroutes.config import DataSpec, TrainSpec
from tlroutes.data.load import load_problem
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route, route_for
from tlroutes.objectives.tasks import primary_metric, task_metrics
from tlroutes.problem import Problem, Split, Task
from tlroutes.train.engine import Stage, evaluate_split
from tlroutes.train.seeding import derive_seed
from tlroutes.train.steps import SupervisedStep
from tlroutes.train.streams import Stream


def load(spec: DataSpec, run_seed: int, role: str) -> Problem:
    """Load the problem a run file's ``source`` or ``target`` block describes."""
    return load_problem(spec, run_seed if spec.seed is None else spec.seed, role)


def evaluate(model: nn.Module, split: Split, task: Task, stem=None, head=None) -> dict[str, float]:
    """``task``'s metrics of ``model(x, stem, head)`` over ``split``."""
    out = evaluate_split(model, lambda x: model(x, stem, head), split.x)
    return task_metrics(task, out, split.y.to(out.device))


def supervised_stage(
    name: str,
    model: nn.Module,
    problem: Problem,
    train: TrainSpec,
    seed: int,
    stem: str | None = None,
    head: str | None = None,
) -> Stage:
    """A stage that trains ``model`` on ``problem``'s train split, selecting on its validation."""
    metric, higher = primary_metric(problem.task)
    stream = Stream(problem.train, train.batch_size, seed=derive_seed(seed, name, "stream"))
    settings = train.model_dump(exclude={"batch_size"})
    return Stage(
        name=name,
        step=SupervisedStep(model, problem.task, stem=stem, head=head),
        streams={"train": stream},
        validate=lambda: evaluate(model, problem.val, problem.task, stem, head),
        monitor=metric,
        mode="max" if higher else "min",
        **settings,
    )


def relation(source: Problem, target: Problem) -> tuple[str, str]:
    """The declared cube axes of two problems: (task, domain), each 'same' or 'different'.

    Tasks are the same when their kinds agree; domains when modality and sample shape agree.
    (Measured evidence refines this; see ``tlroutes inspect``.)
    """
    task = "same" if source.task.kind == target.task.kind else "different"
    same_domain = (source.domain.modality == target.domain.modality
                   and source.domain.input_shape == target.domain.input_shape)
    return task, "same" if same_domain else "different"


def require_fit(route: Route, source: Problem, target: Problem, order: str = "sequential") -> None:
    """Raise :class:`ConfigError` when the two problems do not sit in ``route``'s cell."""
    task, domain = relation(source, target)
    fits = route_for(task=task, domain=domain, order=order)
    if fits is route:
        return
    raise ConfigError(
        f"The {route.title} route needs the {route.task} task and the {route.domain} domain, but "
        f"source '{source.name}' ({source.task.kind}, {source.domain.modality} "
        f"{source.domain.input_shape}) and target '{target.name}' ({target.task.kind}, "
        f"{target.domain.modality} {target.domain.input_shape}) have the {task} task and the "
        f"{domain} domain. The route that fits is {fits.title} (route: {fits.value})."
    )


def summarise(
    route: Route, task: Task, metrics: dict[str, float], baseline: dict[str, float] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``summary.json`` content: route, test metrics, the baseline's, and the gain.

    ``gain`` is the primary metric's improvement over the from-scratch baseline, signed so that
    positive means transfer helped (for a lower-is-better metric it is ``baseline - metric``);
    ``negative_transfer`` is true when it is below zero.
    """
    name, higher = primary_metric(task)
    summary: dict[str, Any] = {
        "route": route.value,
        "route_title": route.title,
        "primary_metric": name,
        "higher_is_better": higher,
        "metrics": metrics,
        "baseline": baseline,
    }
    if baseline is not None:
        diff = metrics[name] - baseline[name]
        summary["gain"] = diff if higher else -diff
        summary["negative_transfer"] = summary["gain"] < 0
    else:
        summary["gain"] = None
        summary["negative_transfer"] = None
    summary.update(extra)
    return summary

