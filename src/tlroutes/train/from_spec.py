"""A run file's blocks made into what trains: a problem, a model, streams, stages, test metrics.

Every route recipe, and Parallel Training's jobs, build their supervised training from these
(:mod:`tlroutes.routes.common` re-exports them for the routes). They sit in the training layer,
below the routes, so that training code such as :mod:`tlroutes.train.parallel` can use them
without importing upward.

- :func:`load`: the problem a ``source`` / ``target`` (or job ``data``) block describes;
- :func:`build`: the ``model`` block's network for some domains (stems) and tasks (heads);
- :func:`stream`, :func:`stage`, :func:`supervised_stage`: a ``training`` block's batches and
  :class:`~tlroutes.train.engine.Stage`;
- :func:`evaluate`: a task's metrics of a model over a split.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tlroutes.backbones.pretrained.weights import load_pretrained
from tlroutes.config import DataSpec, ModelSpec, TrainSpec
from tlroutes.data.load import load_problem
from tlroutes.model import TransferModel, build_model
from tlroutes.objectives.tasks import primary_metric, task_metrics
from tlroutes.problem import Domain, Problem, Split, Task
from tlroutes.seeding import derive_seed
from tlroutes.train.engine import Stage, evaluate_split
from tlroutes.train.steps import SupervisedStep
from tlroutes.train.streams import Stream


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
    if "epochs" in overrides or "steps" in overrides:
        # An override of the length (a probe's own epochs) replaces the run file's, whichever
        # way that was given.
        settings.pop("epochs")
        settings.pop("steps")
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
