"""One entry point from a run file's data block to a validated :class:`Problem`."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from tlroutes.data.files import load_npz
from tlroutes.errors import TLRoutesError
from tlroutes.problem import Problem

if TYPE_CHECKING:
    from tlroutes.config import DataSpec


def load_problem(spec: DataSpec, seed: int, role: str = "data") -> Problem:
    """Load built-in data or an ``.npz`` file as ``spec`` says; ``role`` names it in errors."""
    problem = _load(spec, seed, role)
    if spec.domain is not None:
        problem.domain = replace(problem.domain, name=spec.domain)
        # plan and run place the pair by this declaration (tlroutes.measure.placement)
        problem.meta["declared_domain"] = spec.domain
    return problem


def _load(spec: DataSpec, seed: int, role: str) -> Problem:
    try:
        if spec.dataset.endswith(".npz"):
            kind = spec.task if spec.task != "digit" else "classification"
            return load_npz(spec.dataset, kind=kind, modality=spec.modality)
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
