"""Parallel Training machinery: several unrelated jobs trained at once, each a model of its own.

A *job* is one whole problem — its data, its model and how it trains (:class:`JobSpec`). Jobs
share nothing: no stem, no trunk, no head, no batches, no optimizer state. What the backends share
is the machine, so a backend is a choice of speed only; each job ends as it would trained alone.

Backends
--------

``sequential``
    One job after the other (:func:`train_job` in a loop): the plain loop, the reference.
``fused``
    The jobs' models stacked into one module (``torch.func.stack_module_state``) whose step runs
    every job's forward and backward at once (``vmap`` over the job dimension,
    ``functional_call`` on one template) and returns the sum of the jobs' losses. A sum of
    independent losses has independent gradients, and Adam, AdamW and SGD update every element on
    its own, so one optimizer over the stacked parameters takes, element for element, the steps
    each job's own optimizer would. That holds only when the jobs' updates are otherwise alike, so
    fusing needs every job to have the same ``model`` block, the same input shape, task kind and
    output width, the same number of training samples (so that batches stack) and the same
    ``training`` block (epochs, batch size, lr and its schedule, weight decay, optimizer,
    patience), with no ``grad_clip`` (clipping takes one norm over all parameters). Model
    selection, early stopping and divergence stay per job: each job keeps its own best validation
    epoch, stops being selected after its own ``patience`` epochs without improvement (the fused
    stage ends when every job has stopped), and a job whose loss turns non-finite is marked failed
    while the others go on (its slice of the stacked weights cannot reach theirs).
``interleaved``
    One process, every job with its own model, optimizer and checkpoints (the engine's own
    stage), taking turns: one training step of each job in a fixed round. Each job keeps its own
    torch random-number stream (swapped in and out at every turn), so results are bit-identical to
    ``sequential``. It is not faster than the loop — the same work runs on the same cores — but
    every job advances together, so all of them have results (and curves) at any moment.
``processes``
    Worker processes (``spawn``) on this machine, each training whole jobs with
    ``threads`` CPU threads (default: cores ÷ workers); ``workers`` defaults to
    ``min(jobs, cores)``. Each job writes its own run folder.
``ray``
    The jobs as Ray tasks (extra ``ray``): on the cluster at ``ray_address``, or on a local Ray
    instance started for the run. Each task asks for ``threads`` CPUs (default 1) and
    ``ray_gpus_per_job`` GPUs. On a cluster of several machines, the run folder must be on a file
    system every node sees; the results come back to the caller either way.

Choosing (``auto``)
-------------------

``auto`` loads every job's data, builds its model and times one training step of each (on a
copy: nothing is trained), then picks, and says why in :attr:`Plan.reason`:

1. one job (or none) to run: ``sequential``;
2. the jobs can fuse (conditions above) *and* one fused step, timed, is at least
   ``1 / FUSE_MAX_RATIO`` (1.25×) faster than their single steps one after another: ``fused``.
   Large models gain nothing from fusing (each of their operations already fills the cores), and
   then the timing says so;
3. on a CPU with two or more cores and worker processes to spread over, when the training one
   after another would take at least :data:`PROCESS_MIN_SECONDS` (so that starting processes,
   a few seconds each, pays): ``processes``;
4. otherwise ``interleaved`` (too little work for processes, one core, or one accelerator that
   processes would compete for).

Every rule compares against the plain loop, so ``auto`` is never meant to be slower than it:
fusing is taken only when measured faster, processes only when the work is long enough to repay
their start, and otherwise ``interleaved`` costs the loop's time plus one turn switch per step
(tens of microseconds). What ``auto`` itself costs is its checks: the data (kept for in-process
training), two timed steps per job and, for jobs that could fuse, two fused steps. The timings
are taken with this process's threads on a machine that may be busy, so they estimate; the
reason quotes them. A resumed run keeps the backend its first run chose (``backend.json``).

Failures
--------

A job that fails — its data does not load or does not fit its model, its loss diverges, its worker
process dies — is reported with its cause (:attr:`JobResult.error`); the other jobs go on.

Equivalence with the loop
-------------------------

``interleaved`` equals ``sequential`` bit for bit; ``processes`` and ``ray`` do too when the
workers use as many threads as the loop did (other thread counts change the order of float
reductions, so results agree to rounding). ``fused`` computes the same steps through batched
kernels, so weights agree to float rounding (the tests hold them to 1e-5 over a few dozen steps;
like any change of kernels or thread count, long runs at high Adam learning rates can let the
rounding grow), and jobs with dropout draw other dropout masks (same distribution, not the same
draws).
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from tlroutes.config import DataSpec, ModelSpec, TrainSpec
from tlroutes.errors import ConfigError, TLRoutesError, require_extra
from tlroutes.model import TransferModel, count_parameters
from tlroutes.objectives.tasks import primary_metric, task_loss
from tlroutes.problem import Problem, Task
from tlroutes.routes.common import build, evaluate, load, stage, stream, supervised_stage
from tlroutes.train.checkpoint import load_weights, save_weights_atomic, write_json_atomic
from tlroutes.train.engine import Trainer
from tlroutes.train.hardware import Hardware, make_fabric
from tlroutes.train.progress import ProgressReporter
from tlroutes.train.seeding import derive_seed, seed_everything
from tlroutes.train.steps import SupervisedStep

BACKENDS: tuple[str, ...] = ("auto", "sequential", "fused", "interleaved", "processes", "ray")

#: ``auto`` fuses only when one fused step takes at most this share of the single steps' time.
FUSE_MAX_RATIO = 0.8
#: ``auto`` starts worker processes only for at least this many seconds of training (estimated
#: from one timed step per job), so that their start (a few seconds each) is repaid.
PROCESS_MIN_SECONDS = 30.0

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


def _failed(name: str, exc: BaseException | str, folder: Path | None = None) -> JobResult:
    text = exc if isinstance(exc, str) else describe_error(exc)
    kind = None if isinstance(exc, str) else type(exc).__name__
    result = JobResult(name, "failed", error=text, error_type=kind,
                       folder=str(folder) if folder else None)
    if folder is not None:
        write_json_atomic(folder / "result.json", result.as_dict())
    return result


def _finished(name: str, job: JobSpec, problem: Problem, model: nn.Module,
              metrics: dict[str, float], folder: Path, **extra: Any) -> JobResult:
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
    return _finished(name, job, problem, model, metrics, folder, best_epoch=fitted.best_epoch,
                     epochs_run=fitted.epochs_run, stopped_early=fitted.stopped_early,
                     time_s=time.perf_counter() - t0)


def _safely(name: str, folder: Path, fn: Callable[[], JobResult]) -> JobResult:
    """``fn()``; a failure becomes a failed :class:`JobResult` with its cause."""
    try:
        return fn()
    except Exception as exc:  # one job's failure must not stop the others
        return _failed(name, exc, folder)


def _job_in_worker(name: str, job: dict[str, Any], folder: str, run_seed: int, resume: bool,
                   accelerator: str, threads: int, progress: bool) -> dict[str, Any]:
    """A job in a worker process (``processes``, ``ray``): its result as a plain dict."""
    fabric = make_fabric(Hardware(accelerator=accelerator, threads=threads))
    reporter = ProgressReporter(enabled=progress, live=False)
    spec = JobSpec.model_validate(job)
    return _safely(name, Path(folder), lambda: train_job(
        name, spec, folder, run_seed, resume=resume, fabric=fabric, progress=reporter)).as_dict()


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
        _sync(device)
        times.append(time.perf_counter() - t0)
    steps = job.training.epochs * math.ceil(len(problem.train) / batch)
    return Prepared(name, job, problem, model, min(times[1:] or times), steps)


def fuse_problem(prepared: list[Prepared]) -> str | None:
    """None when the jobs can be fused; else what keeps them apart, in words."""
    if not prepared:
        return "there are no jobs"
    first = prepared[0]
    if first.job.training.grad_clip is not None:
        return ("the jobs clip gradients (grad_clip), which takes one norm over all parameters "
                "of a model and would mix the stacked jobs")
    for p in prepared[1:]:
        pair = f"jobs '{first.name}' and '{p.name}'"
        for what in ("model", "training"):
            a, b = getattr(first.job, what), getattr(p.job, what)
            if a != b:
                keys = [k for k in type(a).model_fields if getattr(a, k) != getattr(b, k)]
                return f"{pair} differ in {', '.join(f'{what}.{k}' for k in keys)}"
        da, db = first.problem.domain, p.problem.domain
        if (da.input_shape, da.modality) != (db.input_shape, db.modality):
            return (f"{pair} read different inputs ({da.modality} {da.input_shape} vs "
                    f"{db.modality} {db.input_shape})")
        ta, tb = first.problem.task, p.problem.task
        if (ta.kind, ta.num_outputs) != (tb.kind, tb.num_outputs):
            return (f"{pair} have different tasks ({ta.kind} with {ta.num_outputs} outputs vs "
                    f"{tb.kind} with {tb.num_outputs})")
        na, nb = len(first.problem.train), len(p.problem.train)
        if na != nb:
            return f"{pair} have {na} and {nb} training samples, so their batches cannot stack"
        if _signature(first.model) != _signature(p.model):
            return f"{pair} build models of different shapes"
    return None


def _signature(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()]


def choose_backend(prepared: list[Prepared], device: torch.device, *, cores: int | None = None,
                   workers: int | None = None, threads: int | None = None) -> Plan:
    """The ``auto`` rule (see the module's docstring), with its reason."""
    cores = cores or os.cpu_count() or 1
    n = len(prepared)
    if n == 0:
        return Plan("sequential", "sequential: no job passed its checks, so nothing runs")
    if n == 1:
        return Plan("sequential", f"sequential: only one job ('{prepared[0].name}') to run")
    why_not = fuse_problem(prepared)
    if why_not is None:
        single = sum(p.step_s for p in prepared)
        fused = time_fused_step(prepared, device)
        if fused <= FUSE_MAX_RATIO * single:
            return Plan("fused", (
                f"fused: the {n} jobs share one architecture, input shape, batch size and "
                f"training settings, and one fused step took {1e3 * fused:.2f} ms against "
                f"{1e3 * single:.2f} ms for their {n} steps one by one "
                f"({single / fused:.1f}× faster)"))
        why_not = (f"fusing them gains nothing measurable (one fused step {1e3 * fused:.2f} ms, "
                   f"their steps one by one {1e3 * single:.2f} ms)")
    estimate = sum(p.step_s * p.steps for p in prepared)
    w = max(1, min(workers or cores, n))
    if device.type != "cpu":
        return Plan("interleaved", f"interleaved: {why_not}; the {n} jobs take turns on the one "
                    f"{device.type} device, which worker processes would compete for")
    if cores < 2 or w < 2:
        return Plan("interleaved", f"interleaved: {why_not}; with one core (or one worker), "
                    "worker processes could only take turns")
    if estimate < PROCESS_MIN_SECONDS:
        return Plan("interleaved", (
            f"interleaved: {why_not}; about {estimate:.0f} s of training one after another is "
            f"too little to repay starting {w} worker processes (a few seconds each)"))
    t = threads or max(1, cores // w)
    return Plan("processes", (
        f"processes: {why_not}; {n} jobs over {w} worker processes × {t} thread(s) on {cores} "
        f"cores (about {estimate:.0f} s of training one after another)"), workers=w, threads=t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ fused


class FusedStep(nn.Module):
    """Several same-shaped models as one stacked module; ``forward`` returns the sum of their
    losses, each on its own job's batch (see the module docstring for why that is exact).

    Parameters and buffers are stacked along a new first dimension, one slice per job. Buffers
    also hold each job's state for model selection and failure (``alive``, ``best`` …), so that
    the engine's checkpoints carry it and a resumed fused stage continues exactly.

    Args:
        models: the jobs' models, of identical structure and shapes.
        names: the jobs' names (the batch keys), in the same order.
        task: the jobs' task kind (their loss), shared.
        monitors: per job, ``(metric, higher_is_better)`` to select its best epoch on.
        patience: per-job early stopping (epochs without improvement). Default None.
    """

    def __init__(self, models: list[nn.Module], names: list[str], task: Task,
                 monitors: list[tuple[str, bool]] | None = None,
                 patience: int | None = None) -> None:
        super().__init__()
        params, buffers = stack_module_state(models)
        self.names, self.task, self.patience = list(names), task, patience
        self.monitors = monitors or [primary_metric(task)] * len(names)
        self.param_names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterList(nn.Parameter(p.detach()) for p in params.values())
        for i, b in enumerate(buffers.values()):
            self.register_buffer(f"stacked_buffer_{i}", b.detach().clone())
        # The template's own tensors are never used (functional_call swaps the stacked slices
        # in); a list keeps it out of this module's parameters and state.
        self._template = [copy.deepcopy(models[0]).to("meta")]
        j = len(names)
        self.register_buffer("alive", torch.ones(j, dtype=torch.bool))
        self.register_buffer("died_at", torch.full((j,), -1, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("best", torch.full((j,), math.nan, dtype=torch.float64))
        self.register_buffer("best_epoch", torch.full((j,), -1, dtype=torch.long))
        self.register_buffer("bad", torch.zeros(j, dtype=torch.long))
        self.register_buffer("stopped", torch.zeros(j, dtype=torch.bool))
        self.register_buffer("epochs_run", torch.zeros(j, dtype=torch.long))
        self.register_buffer("improvements", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> FusedStep:
        super().train(mode)
        self._template[0].train(mode)
        return self

    def _buffers_by_name(self) -> dict[str, Tensor]:
        return {n: getattr(self, f"stacked_buffer_{i}") for i, n in enumerate(self.buffer_names)}

    def _output(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self._template[0], (params, buffers), (x,))

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        xs = torch.stack([batch[n][0] for n in self.names])
        ys = torch.stack([batch[n][1] for n in self.names])
        params = dict(zip(self.param_names, self.stacked, strict=True))
        outputs = vmap(self._output, randomness="different")(params, self._buffers_by_name(), xs)
        losses = job_losses(self.task, outputs, ys)
        finite = torch.isfinite(losses.detach())
        alive = self.alive & finite
        with torch.no_grad():
            self.died_at.copy_(torch.where(self.alive & ~finite, self.steps, self.died_at))
            self.alive.copy_(alive)
            self.steps += 1
        # A failed job's loss leaves the sum (so the engine sees a finite loss); its slice of
        # the weights is its own, so whatever becomes of it cannot reach the other jobs.
        return torch.where(alive, losses, torch.zeros_like(losses)).sum()

    @torch.no_grad()
    def load_into(self, index: int, model: nn.Module) -> nn.Module:
        """Copy job ``index``'s slice of the stacked weights into ``model``; returns it."""
        own = dict(model.named_parameters())
        for name, p in zip(self.param_names, self.stacked, strict=True):
            own[name].copy_(p[index])
        own_buffers = dict(model.named_buffers())
        for name, b in self._buffers_by_name().items():
            own_buffers[name].copy_(b[index])
        return model

    @torch.no_grad()
    def select(self, validate_job: Callable[[int], dict[str, float]],
               save_best: Callable[[int], None]) -> dict[str, float]:
        """After an epoch: validate each running job, keep its best epoch (``save_best``), count
        its epochs without improvement. Returns every job's validation metrics
        (``<job>/<metric>``), ``improvements`` (a count that grows while any job improves: the
        engine's monitor, so that its patience ends the stage once every job has stopped) and
        ``jobs_training``."""
        epoch = int(self.epoch)
        out: dict[str, float] = {}
        for i, name in enumerate(self.names):
            if not bool(self.alive[i]) or bool(self.stopped[i]):
                continue
            metrics = validate_job(i)
            metric, higher = self.monitors[i]
            score, sign = float(metrics[metric]), 1.0 if higher else -1.0
            self.epochs_run[i] += 1
            if int(self.best_epoch[i]) < 0 or sign * score > sign * float(self.best[i]):
                self.best[i], self.best_epoch[i], self.bad[i] = score, epoch, 0
                self.improvements += 1
                save_best(i)
            else:
                self.bad[i] += 1
                if self.patience is not None and int(self.bad[i]) >= self.patience:
                    self.stopped[i] = True
            out.update({f"{name}/{k}": float(v) for k, v in metrics.items()})
        self.epoch += 1
        out["improvements"] = float(self.improvements)
        out["jobs_training"] = float((self.alive & ~self.stopped).sum())
        return out


def job_losses(task: Task, outputs: Tensor, targets: Tensor) -> Tensor:
    """Each job's mean loss ``(J,)`` from outputs ``(J, B, …)``: :func:`task_loss` of every job,
    computed batched (outside ``vmap``, where the losses' decompositions are slow)."""
    if task.kind == "classification":
        j, b = targets.shape[:2]
        per = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(0, 1), reduction="none")
        return per.view(j, b).mean(1)
    if outputs.shape != targets.shape:
        task_loss(task, outputs[0], targets[0])  # raises the DataError that names the shapes
    targets = targets.to(outputs.dtype)
    loss = (F.binary_cross_entropy_with_logits if task.kind == "multilabel" else F.mse_loss)
    return loss(outputs, targets, reduction="none").flatten(1).mean(1)


def time_fused_step(prepared: list[Prepared], device: torch.device, repeats: int = 2) -> float:
    """Seconds of one fused training step (forward and backward) of the jobs, on copies."""
    names = [p.name for p in prepared]
    fused = FusedStep([p.model for p in prepared], names, prepared[0].problem.task).to(device)
    fused.train()
    batch = min(prepared[0].job.training.batch_size, len(prepared[0].problem.train))
    data = {p.name: (p.problem.train.x[:batch].to(device), p.problem.train.y[:batch].to(device))
            for p in prepared}
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fused(data).backward()
        fused.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times[1:] or times)


def run_fused(prepared: list[Prepared], trainer: Trainer, run_seed: int,
              folders: Mapping[str, Path]) -> dict[str, JobResult]:
    """Train same-shaped jobs as one fused stage (named ``fused``) of ``trainer``.

    The stage's checkpoints (``<trainer's folder>/checkpoints/fused/``) hold the stacked weights
    and every job's selection state, so the stage resumes like any other. Each job gets
    ``best.safetensors``, ``model.safetensors`` (its best epoch) and ``result.json`` in its own
    folder of ``folders``.
    """
    t0 = time.perf_counter()
    first = prepared[0]
    train = first.job.training
    names = [p.name for p in prepared]
    models = [p.model.to(trainer.device) for p in prepared]
    fused = FusedStep(models, names, first.problem.task,
                      [primary_metric(p.problem.task) for p in prepared], train.patience)
    streams = {p.name: stream(p.problem.train, train, job_seed(run_seed, p.name), p.name)
               for p in prepared}

    def validate_job(i: int) -> dict[str, float]:
        p = prepared[i]
        return evaluate(fused.load_into(i, models[i]), p.problem.val, p.problem.task)

    def save_best(i: int) -> None:
        if trainer.is_main:
            save_weights_atomic(models[i], folders[names[i]] / "best.safetensors")

    fused_stage = stage("fused", fused, streams, lambda: fused.select(validate_job, save_best),
                        first.problem.task, train, monitor="improvements", mode="max",
                        restore_best=False)
    trainer.fit(fused_stage)
    elapsed = time.perf_counter() - t0
    steps_per_epoch = max(s.steps_per_pass for s in streams.values())
    results = {}
    for i, p in enumerate(prepared):
        folder = folders[p.name]
        if not bool(fused.alive[i]):
            step = int(fused.died_at[i])
            epoch, within = divmod(step, steps_per_epoch)
            results[p.name] = _failed(p.name, (
                f"the loss became non-finite at epoch {epoch + 1}, step {within + 1} (global step "
                f"{step + 1}) of the fused stage; the other jobs went on. Lower the learning "
                "rate or check the data."), folder)
            continue
        load_weights(models[i], folder / "best.safetensors")
        metrics = evaluate(models[i], p.problem.test, p.problem.task)
        if trainer.is_main:
            save_weights_atomic(models[i], folder / "model.safetensors")
        results[p.name] = _finished(
            p.name, p.job, p.problem, models[i], metrics, folder,
            best_epoch=int(fused.best_epoch[i]), epochs_run=int(fused.epochs_run[i]),
            stopped_early=bool(fused.stopped[i]), time_s=elapsed)
    return results


# ------------------------------------------------------------------------------ interleaved


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
            results[name] = _safely(name, folders[name], lambda: train_job(
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


# ------------------------------------------------------------------------ processes and Ray


def run_processes(jobs: Mapping[str, JobSpec], folders: Mapping[str, Path], run_seed: int, *,
                  workers: int, threads: int, accelerator: str, resume: bool,
                  progress: bool) -> dict[str, JobResult]:
    """Train the jobs in ``workers`` spawned processes of ``threads`` threads each."""
    results: dict[str, JobResult] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {name: pool.submit(_job_in_worker, name, job.model_dump(mode="json"),
                                     str(folders[name]), run_seed, resume, accelerator, threads,
                                     progress)
                   for name, job in jobs.items()}
        for name, future in futures.items():
            try:
                results[name] = JobResult(**future.result())
            except Exception as exc:  # the worker died (killed, out of memory …)
                results[name] = _failed(
                    name, f"its worker process stopped: {describe_error(exc)}", folders[name])
    return results


def run_ray(jobs: Mapping[str, JobSpec], folders: Mapping[str, Path], run_seed: int, *,
            address: str | None, threads: int, gpus: float, accelerator: str, resume: bool,
            progress: bool) -> dict[str, JobResult]:
    """Train the jobs as Ray tasks, on the cluster at ``address`` or on a local Ray instance."""
    ray = require_extra("ray", "ray", "Parallel Training on Ray")
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False)
    results: dict[str, JobResult] = {}
    try:
        task = ray.remote(num_cpus=threads, num_gpus=gpus)(_job_in_worker)
        refs = {name: task.remote(name, job.model_dump(mode="json"), str(folders[name]),
                                  run_seed, resume, accelerator, threads, progress)
                for name, job in jobs.items()}
        for name, ref in refs.items():
            try:
                results[name] = JobResult(**ray.get(ref))
            except Exception as exc:  # the task or its worker died
                results[name] = _failed(
                    name, f"its Ray task stopped: {describe_error(exc)}", folders[name])
    finally:
        if started:
            ray.shutdown()
    return results


# --------------------------------------------------------------------------------- all jobs


def run_jobs(
    jobs: Mapping[str, JobSpec | dict[str, Any]],
    out: str | Path,
    *,
    seed: int = 0,
    backend: str = "auto",
    resume: bool = False,
    trainer: Trainer | None = None,
    fabric=None,
    workers: int | None = None,
    threads: int | None = None,
    ray_address: str | None = None,
    ray_gpus_per_job: float = 0.0,
    progress: bool = False,
) -> Outcome:
    """Train every job at once on ``backend`` into ``out/jobs/<name>/``; never stops for one
    job's failure.

    Args:
        jobs: job name → :class:`JobSpec` (or its dict).
        out: the run folder: ``backend.json`` (the plan), ``jobs/<name>/`` (each job's run
            folder) and, for ``fused``, the fused stage's ``checkpoints/`` and ``metrics.jsonl``.
        seed: the run's seed; every job derives its own from it and its name. Default 0.
        backend: one of :data:`BACKENDS`. Default ``"auto"``.
        resume: continue a stopped run in ``out``. Default False.
        trainer: the trainer of ``out`` for the fused stage. Default: a new one.
        fabric: the Fabric for in-process training. Default: the trainer's, else one device.
        workers: ``processes``: worker processes. Default ``min(jobs, cores)``.
        threads: threads per worker process (``processes``) or CPUs per task (``ray``).
            Default cores ÷ workers (``processes``), 1 (``ray``).
        ray_address: the Ray cluster to use. Default: a local instance started for the run.
        ray_gpus_per_job: GPUs each Ray task asks for. Default 0.
        progress: show progress. Default False.
    """
    t0 = time.perf_counter()
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown backend '{backend}'; use one of {', '.join(BACKENDS)}.")
    specs = check_jobs(jobs)
    out = Path(out)
    fabric = fabric or (trainer.fabric if trainer is not None else
                        make_fabric(Hardware(threads=torch.get_num_threads())))
    if trainer is None and backend in ("auto", "fused"):
        trainer = Trainer(out, seed=seed, resume=resume, progress=progress, fabric=fabric)
    device = fabric.device
    folders = {name: out / "jobs" / name for name in specs}
    cores = os.cpu_count() or 1
    results: dict[str, JobResult] = {}

    saved = out / "backend.json"
    plan = None
    if backend == "auto" and resume and saved.is_file():
        import json

        plan = Plan(**json.loads(saved.read_text()))
    prepared: dict[str, Prepared] = {}
    if (plan.backend if plan else backend) in ("auto", "fused"):
        for name, job in specs.items():
            try:
                prepared[name] = prepare(name, job, seed, device)
            except Exception as exc:  # reported per job; the others go on
                results[name] = _failed(name, exc, folders[name])
    if plan is None:
        if backend == "auto":
            plan = choose_backend(list(prepared.values()), device, cores=cores, workers=workers,
                                  threads=threads)
        else:
            plan = Plan(backend, f"{backend}: chosen in the recipe")
    if fabric.global_rank == 0:
        write_json_atomic(saved, asdict(plan))

    todo = {name: job for name, job in specs.items() if name not in results}
    problems = {name: p.problem for name, p in prepared.items()}
    accelerator = device.type
    if plan.backend == "fused" and todo:
        group = [prepared[name] for name in todo]
        problem = fuse_problem(group)
        if problem is not None:
            raise ConfigError(
                f"backend 'fused' needs jobs of one architecture, input shape, task, training "
                f"split size and training settings, but {problem}. Use backend 'auto' (which "
                "falls back to another backend) or 'interleaved'.")
        results.update(run_fused(group, trainer, seed, folders))
    elif plan.backend == "sequential":
        for name, job in todo.items():
            results[name] = _safely(name, folders[name], lambda n=name, j=job: train_job(
                n, j, folders[n], seed, resume=resume, fabric=fabric, progress=progress,
                problem=problems.get(n)))
    elif plan.backend == "interleaved":
        results.update(run_interleaved(todo, folders, seed, resume=resume, fabric=fabric,
                                       progress=progress, problems=problems))
    elif plan.backend == "processes" and todo:
        w = max(1, min(plan.workers or workers or cores, len(todo)))
        t = plan.threads or threads or max(1, cores // w)
        results.update(run_processes(todo, folders, seed, workers=w, threads=t,
                                     accelerator=accelerator, resume=resume, progress=progress))
    elif plan.backend == "ray" and todo:
        results.update(run_ray(todo, folders, seed, address=ray_address, threads=threads or 1,
                               gpus=ray_gpus_per_job, accelerator=accelerator, resume=resume,
                               progress=progress))
    return Outcome({name: results[name] for name in specs}, plan, time.perf_counter() - t0)


# --------------------------------------------------------------------------------- summary


def aggregate_metrics(results: Mapping[str, JobResult]) -> dict[str, float]:
    """``mean_<metric>`` over the finished jobs whose primary metric it is, plus ``jobs_ok`` and
    ``jobs_failed``."""
    groups: dict[str, list[float]] = {}
    for r in results.values():
        if r.ok:
            groups.setdefault(r.primary_metric, []).append(r.metrics[r.primary_metric])
    out = {f"mean_{k}": sum(v) / len(v) for k, v in groups.items()}
    out["jobs_ok"] = float(sum(r.ok for r in results.values()))
    out["jobs_failed"] = float(sum(not r.ok for r in results.values()))
    return out


def summarise_jobs(route_id: str, route_title: str, outcome: Outcome,
                   baseline: Outcome | None = None, **extra: Any) -> dict[str, Any]:
    """The ``summary.json`` of a Parallel Training run.

    ``metrics`` holds ``mean_<metric>`` over the finished jobs whose primary metric it is (a
    mean of accuracies, a mean of MSEs …) and the counts ``jobs_ok``/``jobs_failed``; the
    primary metric is the mean shared by the most jobs. ``jobs`` has every job's own result,
    ``failed`` each failed job's cause, ``also`` each finished job's primary metric (the table's
    "also measured"). With a ``baseline`` (the same jobs one after another): its ``metrics``,
    ``gain`` (the signed change of the primary mean: about 0, nothing being shared), each job's
    ``baseline_metrics`` and ``gain``, and the wall-time ``speedup``.

    Raises :class:`TLRoutesError` naming every cause when no job finished.
    """
    results = outcome.results
    if not any(r.ok for r in results.values()):
        causes = "\n".join(f"  - {n}: {r.error}" for n, r in results.items())
        raise TLRoutesError(f"Every job of the Parallel Training run failed:\n{causes}")
    counts: dict[str, int] = {}
    for r in results.values():
        if r.ok:
            counts[r.primary_metric] = counts.get(r.primary_metric, 0) + 1
    metric = max(counts, key=lambda k: counts[k])  # ties: the first job's
    higher = next(r.higher_is_better for r in results.values() if r.primary_metric == metric)
    primary = f"mean_{metric}"
    metrics = aggregate_metrics(results)
    base = aggregate_metrics(baseline.results) if baseline is not None else None
    gain = None
    if base is not None and primary in base:
        gain = (metrics[primary] - base[primary]) * (1 if higher else -1)
    jobs = {}
    for name, r in results.items():
        entry = r.as_dict()
        b = baseline.results.get(name) if baseline is not None else None
        if b is not None:
            entry["baseline_metrics"] = b.metrics
            entry["gain"] = (None if not (r.ok and b.ok) else
                             (r.metrics[r.primary_metric] - b.metrics[b.primary_metric])
                             * (1 if r.higher_is_better else -1))
        jobs[name] = entry
    failed = {n: r.error for n, r in results.items() if not r.ok}
    shared = f"nothing: {len(results)} separate models ({outcome.plan.backend})"
    if failed:
        shared += f"; failed: {', '.join(failed)}"
    summary: dict[str, Any] = {
        "route": route_id,
        "route_title": route_title,
        "primary_metric": primary,
        "higher_is_better": higher,
        "metrics": metrics,
        "baseline": base,
        "gain": gain,
        "negative_transfer": None,
        "carried_over": shared,
        "backend": outcome.plan.backend,
        "backend_reason": outcome.plan.reason,
        "wall_time_s": outcome.wall_time_s,
        "jobs": jobs,
        "failed": failed,
        "also": {f"{n} {r.primary_metric}": r.metrics[r.primary_metric]
                 for n, r in results.items() if r.ok},
    }
    if baseline is not None:
        summary["sequential_wall_time_s"] = baseline.wall_time_s
        summary["speedup"] = baseline.wall_time_s / max(outcome.wall_time_s, 1e-9)
    summary.update(extra)
    return summary
