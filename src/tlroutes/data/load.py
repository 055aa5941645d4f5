"""One entry point from a run file's data block to a validated :class:`Problem`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from tlroutes.data.sources.build import require_labels
from tlroutes.data.sources.dispatch import file_problem
from tlroutes.data.sources.splitting import run_folder
from tlroutes.errors import TLRoutesError
from tlroutes.problem import Problem

if TYPE_CHECKING:
    from tlroutes.config import DataSpec


#: What needs the labels of a problem loaded without ``allow_unlabelled`` (said when it has none).
_NEEDS_LABELS: ContextVar[str] = ContextVar(
    "needs_labels", default="training on it and the report's metrics")


@contextmanager
def labels_needed_by(what: str) -> Iterator[None]:
    """Within the block, a problem loaded without labels is refused as needed by ``what`` (the
    runner names the route: "Task Fine-Tuning (it trains on the target's labels)")."""
    token = _NEEDS_LABELS.set(what)
    try:
        yield
    finally:
        _NEEDS_LABELS.reset(token)


#: Called as ``hook(role, spec, seed, problem)`` after every load: a run's manifest records the
#: data each model was trained on this way (:mod:`tlroutes.manifest.record`).
ON_LOAD: list[Callable[[str, DataSpec, int, Problem], None]] = []


def load_problem(spec: DataSpec, seed: int, role: str = "data", *,
                 run_dir: str | Path | None = None, allow_unlabelled: bool = False) -> Problem:
    """Load built-in data, a table, an ``.npz`` archive or a ``datasets`` folder as ``spec``
    says; ``role`` names it in errors (and keys its kept splits).

    ``run_dir``: the run folder whose ``data/`` keeps automatic splits for a resume; None
    (default) the one the runner set (:func:`tlroutes.data.sources.splitting.run_folder`), and
    outside a run none (the splits are made afresh: the same for the same seed).

    ``allow_unlabelled``: accept data without labels (``Problem.meta["unlabelled"]``, see
    :mod:`tlroutes.data.sources.build`). Default False: the routes train and report with the
    labels of every problem they load, so unlabelled data is refused by name.
    """
    if run_dir is not None:
        with run_folder(run_dir):
            problem = _load(spec, seed, role)
    else:
        problem = _load(spec, seed, role)
    if not allow_unlabelled:
        require_labels(problem, role, _NEEDS_LABELS.get())
    if spec.domain is not None:
        problem.domain = replace(problem.domain, name=spec.domain)
        # plan and run place the pair by this declaration (tlroutes.measure.placement)
        problem.meta["declared_domain"] = spec.domain
    for hook in ON_LOAD:
        hook(role, spec, seed, problem)
    return problem


def _load(spec: DataSpec, seed: int, role: str) -> Problem:
    try:
        problem = file_problem(spec, seed, role)
        if problem is not None:
            return problem
        from tlroutes.data.builtin import load_builtin

        return load_builtin(
            spec.dataset,
            task=spec.task,
            shift=dict(spec.shift),
            n=spec.n,
            seed=seed,
            split=tuple(spec.split),
            classes=spec.classes,
            canvas=spec.canvas,
        )
    except TLRoutesError as exc:
        raise type(exc)(f"{role}: {exc}") from exc
