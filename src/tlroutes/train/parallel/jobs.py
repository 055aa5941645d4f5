"""One job of Parallel Training: its spec and seed, its result, training it alone, checking it.

Every backend but ``fused`` trains each job with :func:`train_job`; :func:`prepare` loads a job's
data and builds its model before training, for ``auto``'s timing and ``fused``'s stacking.
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tlroutes.config import DataSpec, ModelSpec, TrainSpec
from tlroutes.errors import ConfigError, TLRoutesError
from tlroutes.model import TransferModel, count_parameters
from tlroutes.objectives.tasks import primary_metric
from tlroutes.problem import Problem
from tlroutes.seeding import derive_seed, seed_everything
from tlroutes.train.checkpoint import write_json_atomic
from tlroutes.train.engine import Trainer
from tlroutes.train.from_spec import build, evaluate, load, supervised_stage
from tlroutes.train.progress import ProgressReporter
from tlroutes.train.steps import SupervisedStep

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

EMPTY_JOBS = """Parallel Training needs at least one job in its recipe, e.g.

    route: parallel_training
    recipe:
      jobs:
        digits:
          data: {dataset: digits, task: digit}
          model: {trunk: cnn2d}
          training: {epochs: 5}
        signals:
          data: {dataset: mnist1d, task: parity}
          model: {trunk: cnn1d}

Each job has its own data, model and training (every field optional, with the defaults of a run
file's target, model and target_training blocks); the top-level source, target and model are not
used by this route."""


class JobSpec(BaseModel):
    """One job of Parallel Training: a whole problem, with a model and training of its own."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    data: DataSpec = Field(
        default_factory=DataSpec, description="The job's data, as a run file's `target` block "
        "(dataset, task, shift, n, split, …). Default: built-in digits, task 'digit'.",
    )
    model: ModelSpec = Field(
        default_factory=ModelSpec, description="The job's network, as a run file's `model` "
        "block; nothing of it is shared with other jobs. Default: trunk 'cnn2d'.",
    )
    training: TrainSpec = Field(
        default_factory=TrainSpec, description="How the job trains, as a run file's "
        "`target_training` block. Default: 10 epochs, batch 64, AdamW at lr 1e-3, cosine.",
    )


def check_jobs(jobs: Mapping[str, Any]) -> dict[str, JobSpec]:
    """Validated jobs: names usable as folder names, at least one job; :class:`ConfigError`."""
    if not jobs:
        raise ConfigError(EMPTY_JOBS)
    bad = [name for name in jobs if not JOB_NAME.match(str(name))]
    if bad:
        raise ConfigError(
            f"Job name(s) {', '.join(repr(b) for b in bad)} cannot name a folder; use letters, "
            "digits, '-', '_' and '.', starting with a letter or digit."
        )
    return {name: j if isinstance(j, JobSpec) else JobSpec.model_validate(j)
            for name, j in jobs.items()}


def job_seed(run_seed: int, name: str) -> int:
    """The seed of job ``name``: its model's initialisation, batches and dropout derive from it."""
    return derive_seed(run_seed, "job", name)


# ---------------------------------------------------------------------------------- results


@dataclass
class JobResult:
    """How one job ended: test metrics when it finished, its error when it failed."""

    name: str
    status: str  # "ok" or "failed"
    metrics: dict[str, float] | None = None
    primary_metric: str | None = None
    higher_is_better: bool | None = None
    error: str | None = None
    error_type: str | None = None
    dataset: str | None = None
    task: str | None = None
    trunk: str | None = None
    parameters: int | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    stopped_early: bool | None = None
    time_s: float | None = None
    folder: str | None = None

    @property
    def ok(self) -> bool:
        """True when the job finished."""
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class Plan:
    """A backend and why it was chosen (``reason`` starts with the backend's name)."""

    backend: str
    reason: str
    workers: int | None = None
    threads: int | None = None


@dataclass
class Outcome:
    """What :func:`run_jobs` returns: every job's result (in the jobs' order), the plan, time."""

    results: dict[str, JobResult]
    plan: Plan
    wall_time_s: float


def describe_error(exc: BaseException) -> str:
    """A one-line cause: tlroutes' own messages as they are, others with their type."""
    return str(exc) if isinstance(exc, TLRoutesError) else f"{type(exc).__name__}: {exc}"


def job_failed(name: str, exc: BaseException | str, folder: Path | None = None) -> JobResult:
    """A failed job's result (``exc``: what stopped it, or its cause in words), also written to
    ``folder/result.json`` when a folder is given."""
    text = exc if isinstance(exc, str) else describe_error(exc)
    kind = None if isinstance(exc, str) else type(exc).__name__
    result = JobResult(name, "failed", error=text, error_type=kind,
                       folder=str(folder) if folder else None)
    if folder is not None:
        write_json_atomic(folder / "result.json", result.as_dict())
    return result


def job_finished(name: str, job: JobSpec, problem: Problem, model: nn.Module,
                 metrics: dict[str, float], folder: Path, **extra: Any) -> JobResult:
    """A finished job's result with its test ``metrics``, also written to
    ``folder/result.json``; ``extra``: further :class:`JobResult` fields."""
    metric, higher = primary_metric(problem.task)
    result = JobResult(
        name, "ok", metrics=metrics, primary_metric=metric, higher_is_better=higher,
        dataset=problem.name, task=f"{problem.task.name} ({problem.task.kind})",
        trunk=job.model.trunk, parameters=count_parameters(model), folder=str(folder), **extra,
    )
    write_json_atomic(folder / "result.json", result.as_dict())
    return result


# ------------------------------------------------------------------------- one job, alone


def train_job(
    name: str,
    job: JobSpec,
    folder: str | Path,
    run_seed: int,
    *,
    resume: bool = False,
    fabric=None,
    progress: bool | ProgressReporter = False,
    on_step: Callable[[], None] | None = None,
    problem: Problem | None = None,
) -> JobResult:
    """Train one job alone into ``folder`` (its own run folder) and test it.

    Every backend but ``fused`` runs exactly this. The folder gets ``metrics.jsonl``,
    ``checkpoints/<name>/`` (resumable), ``model.safetensors`` and ``result.json``.

    Args:
        name: the job's name (its stage name too).
        job: its data, model and training.
        folder: its run folder.
        run_seed: the run's seed; the job's own is :func:`job_seed` of it and ``name``.
        resume: continue the job from its checkpoints. Default False.
        fabric: the Fabric to train with. Default: a new one for one device.
        progress: show progress (or a reporter to use). Default False.
        on_step: called before every training step (``interleaved`` passes the turn there).
        problem: the job's data when already loaded. Default: loaded from ``job.data``.

    Raises whatever stops the job; callers that run several jobs catch it per job.
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    seed = job_seed(run_seed, name)
    trainer = Trainer(folder, seed=seed, resume=resume, progress=progress, fabric=fabric)
    problem = problem or load(job.data, run_seed, f"job '{name}'")
    trainer.seed_for("model")
    model = build(job.model, {"input": problem.domain}, {"task": problem.task})
    job_stage = supervised_stage(name, model, problem, job.training, seed)
    if on_step is not None:
        job_stage.step.register_forward_pre_hook(lambda module, args: on_step())
    fitted = trainer.fit(job_stage)
    metrics = evaluate(model, problem.test, problem.task)
    trainer.save_model(model)
    return job_finished(name, job, problem, model, metrics, folder, best_epoch=fitted.best_epoch,
                     epochs_run=fitted.epochs_run, stopped_early=fitted.stopped_early,
                     time_s=time.perf_counter() - t0)


def safely(name: str, folder: Path, fn: Callable[[], JobResult]) -> JobResult:
    """``fn()``; a failure becomes a failed :class:`JobResult` with its cause."""
    try:
        return fn()
    except Exception as exc:  # one job's failure must not stop the others
        return job_failed(name, exc, folder)


# ------------------------------------------------------------------------------ checking


@dataclass
class Prepared:
    """A job checked before training: its data, its freshly built model, one timed step."""

    name: str
    job: JobSpec
    problem: Problem
    model: TransferModel
    step_s: float
    steps: int


def prepare(name: str, job: JobSpec, run_seed: int, device: torch.device,
            repeats: int = 2) -> Prepared:
    """Load the job's data, build its model (as :func:`train_job` would) and time one training
    step on a copy of it. Raises what a job that cannot train would raise."""
    problem = load(job.data, run_seed, f"job '{name}'")
    seed_everything(derive_seed(job_seed(run_seed, name), "model"))
    model = build(job.model, {"input": problem.domain}, {"task": problem.task}).to(device)
    probe = SupervisedStep(copy.deepcopy(model), problem.task).train()
    batch = min(job.training.batch_size, len(problem.train))
    xy = (problem.train.x[:batch].to(device), problem.train.y[:batch].to(device))
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        probe({"train": xy}).backward()
        probe.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    steps = job.training.total_steps(math.ceil(len(problem.train) / batch))
    return Prepared(name, job, problem, model, min(times[1:] or times), steps)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously), so that timings hold."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

