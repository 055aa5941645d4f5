"""Parallel Training: unrelated problems trained at the same time, side by side.

Another task, another domain, at once (content moderation and e-mail classification for one
client): each job has its own data, stem, trunk and head, and nothing passes between them. The
route's value is operational — one run file, one call, one results table, the machine kept busy —
not a transfer of knowledge.

Run file::

    route: parallel_training
    recipe:
      backend: auto
      jobs:
        digits:  {data: {dataset: digits, task: digit}, model: {trunk: cnn2d}}
        signals: {data: {dataset: mnist1d, task: parity}, model: {trunk: cnn1d}}

The top-level ``source``, ``target``, ``problems``, ``model``, the training blocks and
``baseline`` are not read: every job carries its own, and a run file that sets them is refused
(:data:`RUN_FILE_BLOCKS`). ``seed`` is the run's seed (each job derives its own
from it and its name); ``hardware`` says where (``threads``: threads per worker process).

Recipe:
1. Check every job (``auto`` and ``fused``): load its data, build its model, time one step.
2. Train all jobs at once on the backend (``auto`` picks and says why; see
   :mod:`tlroutes.train.parallel` for the backends and the rule). A job that fails is reported
   with its cause; the others go on.
3. Test each job on its own test split; ``jobs/<name>/`` is each job's run folder.

Baseline, honestly: the from-scratch baseline of the other routes answers "did what was carried
over help?". Here nothing is carried over, and each job already *is* a model trained from scratch
alone — the tests check that every backend gives what one-after-another training gives (exactly
for ``interleaved``, ``processes`` and ``ray`` at equal threads; to float rounding for ``fused``).
Training everything a second time would cost as much again to show a gain of zero, so by default
``baseline`` and ``gain`` are null and the summary's ``baseline_note`` says so. With
``sequential_baseline: true`` the same jobs are also trained one after another (in
``sequential/``): the summary then reports that baseline, the ``gain`` (about zero) and, the
figure that matters for this route, the wall-time ``speedup``.

Summary: ``metrics`` holds the mean primary metric over the jobs that share it (``mean_accuracy``
over the classification jobs, ``mean_mse`` over the regression ones …) and ``jobs_ok`` /
``jobs_failed``; ``primary_metric`` is the mean shared by the most jobs. ``jobs`` has each job's
full result, ``failed`` each failed job's cause, ``backend`` and ``backend_reason`` the choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tlroutes.config import RunSpec
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block, Cell, Table, Text
from tlroutes.reporting.tables import fmt
from tlroutes.routes.common import RecipeSpec
from tlroutes.routes.registry import Advice, RouteProse, Sharing
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer
from tlroutes.train.parallel import EMPTY_JOBS, JobSpec, run_jobs, summarise_jobs

if TYPE_CHECKING:
    from tlroutes.measure.evidence import Evidence
    from tlroutes.problem import Problem

ROUTE = Route.PARALLEL_TRAINING


class Recipe(RecipeSpec):
    """Parallel Training settings (the run file's ``recipe:`` block)."""

    jobs: dict[str, JobSpec] = Field(
        default_factory=dict, description="The jobs, by name (letters, digits, '-', '_', '.'): "
        "each a `data`, `model` and `training` block of its own, every field optional with the "
        "defaults of a run file's target, model and target_training. At least one is required. "
        "Default {}.",
    )
    backend: Literal["auto", "sequential", "fused", "interleaved", "processes", "ray"] = Field(
        "auto", description="How the jobs run at once: 'auto' (default: picks one and says why "
        "in the summary), 'fused' (same-shaped models stacked into one vmapped module), "
        "'interleaved' (one step of each job in turn, in this process), 'processes' (worker "
        "processes on this machine), 'ray' (Ray tasks; extra 'ray'), or 'sequential' (one after "
        "another: the plain loop).",
    )
    workers: int | None = Field(
        None, ge=1, description="'processes': worker processes. Default: min(jobs, cores).",
    )
    ray_address: str | None = Field(
        None, description="'ray': the address of the Ray cluster (as for ray.init). Default: a "
        "local Ray instance started for the run.",
    )
    ray_gpus_per_job: float = Field(
        0.0, ge=0, description="'ray': GPUs each job's task asks for. Default 0.",
    )
    sequential_baseline: bool = Field(
        False, description="Also train the same jobs one after another (into `sequential/`) "
        "and report that baseline, the gain (about zero: nothing is shared) and the wall-time "
        "speedup. Default false: it doubles the cost to measure what the tests already check.",
    )


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Run the recipe; returns the summary (see :func:`tlroutes.train.parallel.summarise_jobs`:
    the jobs and the backend are its details)."""
    if not recipe.jobs:
        raise ConfigError(EMPTY_JOBS)
    if trainer.fabric.world_size > 1:
        raise ConfigError(
            "Parallel Training spreads whole jobs, not one job over several devices; set "
            "hardware.devices and num_nodes to 1 and choose backend 'processes' or 'ray'.")
    progress = trainer.progress.enabled
    common = {"seed": spec.seed, "resume": trainer.resume, "progress": progress}
    outcome = run_jobs(recipe.jobs, trainer.run_dir, backend=recipe.backend, trainer=trainer,
                       workers=recipe.workers, threads=spec.hardware.threads,
                       ray_address=recipe.ray_address,
                       ray_gpus_per_job=recipe.ray_gpus_per_job, **common)
    baseline = None
    if recipe.sequential_baseline:
        baseline = run_jobs(recipe.jobs, trainer.run_dir / "sequential", backend="sequential",
                            fabric=trainer.fabric, **common)
    note = ("the same jobs trained one after another (backend sequential, in sequential/); "
            "gain is the change of the primary mean, speedup the ratio of wall times"
            if baseline is not None else
            "none trained: nothing is shared, so each job's result is what it would be trained "
            "alone (the tests check every backend against one-after-another training); set "
            "recipe.sequential_baseline: true to measure it and the wall-time speedup")
    return summarise_jobs(ROUTE.value, ROUTE.title, outcome, baseline, baseline_note=note)


# --------------------------------------------------------------------------------------------------
# Prose and advice (what `tlroutes routes --explain`, the report and `tlroutes plan` say)
# --------------------------------------------------------------------------------------------------

PROSE = RouteProse(
    "Train unrelated problems at the same time, side by side, with separate models that share "
    "only the schedule and the infrastructure.",
    example="content moderation and e-mail classification for one client",
    sharing=Sharing(stems="separate", trunk="separate",
                    heads="separate", stages="concurrent, independent"),
)


def recommend(problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> Advice:
    """The plan's advice: let the runner measure and pick the fastest backend."""
    return {"backend": "auto"}, {
        "backend": "Measures one step of each job and picks the fastest way to run them."}


# --------------------------------------------------------------------------------------------------
# Report (the report's route section; see tlroutes.routes.registry for the protocol)
# --------------------------------------------------------------------------------------------------


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """The report's route section: every job's result or cause, and the backend chosen."""
    s = run.summary
    if s is None:
        return details_blocks(run)
    d = s.details
    jobs = d.get("jobs") or {}
    compared = any("baseline_metrics" in job for job in jobs.values())
    rows = []
    for name, job in jobs.items():
        ok = job.get("status") == "ok"
        metric = job.get("primary_metric")
        value = (job.get("metrics") or {}).get(metric) if ok else None
        result = f"{metric} {fmt(value)}" if ok else (job.get("error") or "failed")
        row: list[str | Cell] = [
            Cell(name, "strong"), Cell(job.get("status", "?"), "good" if ok else "bad"),
            Cell(result, "" if ok else "bad"),
            f"{job['time_s']:.1f} s" if job.get("time_s") is not None else "-",
            d.get("backend", "?"), job.get("task") or "-", job.get("trunk") or "-",
            fmt(job.get("parameters"))]
        if compared:
            base = (job.get("baseline_metrics") or {}).get(metric)
            row += [fmt(base), fmt(job.get("gain"))]
        rows.append(row)
    columns = ["job", "status", "test metric / cause", "time", "backend", "task", "trunk",
               "parameters"] + (["one after another", "gain"] if compared else [])
    blocks: list[Block] = [Table(columns, rows, id="jobs",
                                 caption="Every job: its own data and model, nothing shared.")]
    backend = f"Backend **{d.get('backend', '?')}**"
    if d.get("backend_reason"):
        backend += f", because {d['backend_reason']}"
    blocks.append(Text(backend + "."))
    if d.get("wall_time_s") is not None:
        speedup = (f"; {d['speedup']:.2f}× faster than one after another"
                   if isinstance(d.get("speedup"), int | float) else "")
        blocks.append(Text(f"Wall time of all jobs together: {d['wall_time_s']:.1f} s"
                           f"{speedup}."))
    return blocks + details_blocks(run, shown={"jobs", "failed", "backend", "backend_reason",
                                               "wall_time_s", "speedup"})


#: The run file's top-level blocks this route reads besides those every run reads (route, order,
#: constraints, seed, seeds, recipe, hardware, tracking); another one set is refused at resolve.
# Nothing but the recipe: every job carries its own data, model and training.
RUN_FILE_BLOCKS: frozenset[str] = frozenset()
