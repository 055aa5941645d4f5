"""Parallel Training machinery: several unrelated jobs trained at once, each a model of its own.

A *job* is one whole problem — its data, its model and how it trains (:class:`JobSpec`). Jobs
share nothing: no stem, no trunk, no head, no batches, no optimizer state. What the backends share
is the machine, so a backend is a choice of speed only; each job ends as it would trained alone.

This module holds the entry, :func:`run_jobs`, and ``auto``'s rule, :func:`choose_backend`;
:mod:`~tlroutes.train.parallel.jobs` one job (its spec, seed and result, training it alone,
checking it before training); :mod:`~tlroutes.train.parallel.fused`,
:mod:`~tlroutes.train.parallel.in_process` (``sequential``, ``interleaved``) and
:mod:`~tlroutes.train.parallel.workers` (``processes``, ``ray``) the backends;
:mod:`~tlroutes.train.parallel.summary` a run's ``summary.json``.

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

import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from tlroutes.errors import ConfigError
from tlroutes.train.checkpoint import write_json_atomic
from tlroutes.train.engine import Trainer
from tlroutes.train.hardware import Hardware, make_fabric
from tlroutes.train.parallel.fused import (
    FusedStep,
    fuse_problem,
    job_losses,
    run_fused,
    time_fused_step,
)
from tlroutes.train.parallel.in_process import run_interleaved, run_sequential
from tlroutes.train.parallel.jobs import (
    EMPTY_JOBS,
    JobResult,
    JobSpec,
    Outcome,
    Plan,
    Prepared,
    check_jobs,
    describe_error,
    job_failed,
    job_seed,
    prepare,
    train_job,
)
from tlroutes.train.parallel.summary import aggregate_metrics, summarise_jobs
from tlroutes.train.parallel.workers import run_processes, run_ray

__all__ = [
    "BACKENDS", "EMPTY_JOBS", "FUSE_MAX_RATIO", "PROCESS_MIN_SECONDS", "FusedStep", "JobResult",
    "JobSpec", "Outcome", "Plan", "Prepared", "aggregate_metrics", "check_jobs", "choose_backend",
    "describe_error", "fuse_problem", "job_losses", "job_seed", "prepare", "run_fused",
    "run_interleaved", "run_jobs", "run_processes", "run_ray", "run_sequential",
    "summarise_jobs", "time_fused_step", "train_job",
]

BACKENDS: tuple[str, ...] = ("auto", "sequential", "fused", "interleaved", "processes", "ray")

#: ``auto`` fuses only when one fused step takes at most this share of the single steps' time.
FUSE_MAX_RATIO = 0.8
#: ``auto`` starts worker processes only for at least this many seconds of training (estimated
#: from one timed step per job), so that their start (a few seconds each) is repaid.
PROCESS_MIN_SECONDS = 30.0


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
        plan = _read_plan(saved)
    prepared: dict[str, Prepared] = {}
    if (plan.backend if plan else backend) in ("auto", "fused"):
        for name, job in specs.items():
            try:
                prepared[name] = prepare(name, job, seed, device)
            except Exception as exc:  # reported per job; the others go on
                results[name] = job_failed(name, exc, folders[name])
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
        results.update(run_sequential(todo, folders, seed, resume=resume, fabric=fabric,
                                      progress=progress, problems=problems))
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


def _read_plan(path: Path) -> Plan:
    """``backend.json`` read back, validated: damage is one message naming the file."""
    from tlroutes.runfolder.reads import damaged, read_json

    data = read_json(path, "backend.json")
    try:
        plan = Plan(**data)
    except TypeError as exc:
        raise damaged(path, f"it is not a backend plan ({exc})", "backend.json") from None
    if plan.backend not in BACKENDS:
        raise damaged(path, f"it names no known backend ({plan.backend!r})", "backend.json")
    return plan
