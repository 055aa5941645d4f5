"""The in-process backends: ``sequential`` (one job after the other) and ``interleaved``.

``interleaved`` trains every job in its own thread of this process, passing one turn around them
in a fixed round, so that results are bit-identical to ``sequential`` while all jobs advance
together.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from tlroutes.problem import Problem
from tlroutes.train.parallel.jobs import JobResult, JobSpec, safely, train_job
from tlroutes.train.progress import ProgressReporter


class _Turns:
    """Passes one turn around the jobs in a fixed round; each keeps its own torch RNG stream."""

    def __init__(self, names: list[str]) -> None:
        self._order = list(names)
        self._active = set(names)
        self._turn: str | None = self._order[0] if names else None
        self._cond = threading.Condition()
        self._rng: dict[str, tuple[Tensor, list[Tensor] | None]] = {}

    def wait(self, name: str) -> None:
        """Block until it is ``name``'s turn, then bring back its random-number stream."""
        with self._cond:
            self._cond.wait_for(lambda: self._turn == name)
        if name in self._rng:
            cpu, cuda = self._rng[name]
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)

    def _advance(self, name: str) -> None:
        i = self._order.index(name)
        ring = self._order[i + 1:] + self._order[: i + 1]
        self._turn = next((n for n in ring if n in self._active), None)
        self._cond.notify_all()

    def step(self, name: str) -> None:
        """``name`` ends its turn and waits for the next one."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self._rng[name] = (torch.get_rng_state(), cuda)
        with self._cond:
            self._advance(name)
        self.wait(name)

    def leave(self, name: str) -> None:
        """``name`` is done (finished or failed); the round goes on without it."""
        with self._cond:
            self._active.discard(name)
            if self._turn == name:
                self._advance(name)


def run_interleaved(jobs: Mapping[str, JobSpec], folders: Mapping[str, Path], run_seed: int, *,
                    resume: bool, fabric, progress: bool,
                    problems: Mapping[str, Problem] | None = None) -> dict[str, JobResult]:
    """Train the jobs in this process, one step of each in turn (see the module docstring)."""
    names = list(jobs)
    turns = _Turns(names)
    results: dict[str, JobResult] = {}
    problems = problems or {}

    def body(name: str) -> None:
        turns.wait(name)
        try:
            results[name] = safely(name, folders[name], lambda: train_job(
                name, jobs[name], folders[name], run_seed, resume=resume, fabric=fabric,
                progress=ProgressReporter(enabled=progress, live=False),
                on_step=lambda: turns.step(name), problem=problems.get(name)))
        finally:
            turns.leave(name)

    threads = [threading.Thread(target=body, args=(n,), name=f"job-{n}", daemon=True)
               for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {n: results[n] for n in names}


def run_sequential(jobs: Mapping[str, JobSpec], folders: Mapping[str, Path], run_seed: int, *,
                   resume: bool, fabric, progress: bool,
                   problems: Mapping[str, Problem] | None = None) -> dict[str, JobResult]:
    """Train the jobs in this process, one after the other: the plain loop, the reference."""
    problems = problems or {}
    return {name: safely(name, folders[name], lambda n=name, j=job: train_job(
                n, j, folders[n], run_seed, resume=resume, fabric=fabric, progress=progress,
                problem=problems.get(n)))
            for name, job in jobs.items()}
