"""The backends in other processes: ``processes`` (spawned workers) and ``ray`` (Ray tasks).

A worker trains whole jobs with :func:`~tlroutes.train.parallel.jobs.train_job` and sends back
each job's result as a plain dict; a worker that dies becomes its job's failure.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tlroutes.errors import require_extra
from tlroutes.train.hardware import Hardware, make_fabric
from tlroutes.train.parallel.jobs import (
    JobResult,
    JobSpec,
    describe_error,
    job_failed,
    safely,
    train_job,
)
from tlroutes.train.progress import ProgressReporter


def _job_in_worker(name: str, job: dict[str, Any], folder: str, run_seed: int, resume: bool,
                   accelerator: str, threads: int, progress: bool) -> dict[str, Any]:
    """A job in a worker process (``processes``, ``ray``): its result as a plain dict."""
    fabric = make_fabric(Hardware(accelerator=accelerator, threads=threads))
    reporter = ProgressReporter(enabled=progress, live=False)
    spec = JobSpec.model_validate(job)
    return safely(name, Path(folder), lambda: train_job(
        name, spec, folder, run_seed, resume=resume, fabric=fabric, progress=reporter)).as_dict()


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
                results[name] = job_failed(
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
                results[name] = job_failed(
                    name, f"its Ray task stopped: {describe_error(exc)}", folders[name])
    finally:
        if started:
            ray.shutdown()
    return results

