"""``tlroutes demo``: the eight packaged example run files on built-in data, one after another.

The example run files ship inside the package (``tlroutes/examples/``; the repository's
``examples/`` folder points there), so the demo runs the same files a user copies. Each route
gets a run folder ``out/<route>/`` with its report; ``out/index.html`` links them all.
The full demo repeats every example over :data:`DEMO_SEEDS` seeds so that the table shows the
spread of each gain; ``quick=True`` runs every example once at a third of its epochs (at least
one), a smoke test that still trains every stage and baseline.
"""

from __future__ import annotations

import math
import sys
import time
from importlib import resources
from pathlib import Path

from tlroutes.config import RunSpec, TrainSpec, load_run_file
from tlroutes.matrix import Route
from tlroutes.reporting.build import build_index
from tlroutes.routes import get_route, list_routes
from tlroutes.runner import run
from tlroutes.summary import Summary

DEMO_SEEDS = 3
"""Seeds per example in the full demo (the quick one runs one)."""

QUICK_EPOCH_FRACTION = 1 / 3
"""``--quick`` trains each stage for this fraction of its epochs, rounded up."""


def example_files() -> list[Path]:
    """The packaged example run files, in the cube's order of routes: each route's
    ``<route>.yaml``, then its variants ``<route>_<variant>.yaml`` by name."""
    folder = Path(str(resources.files("tlroutes") / "examples"))
    files = []
    for route in Route:
        main = folder / f"{route.value}.yaml"
        files += [main] if main.is_file() else []
        files += sorted(folder.glob(f"{route.value}_*.yaml"))
    return files


def runnable_examples() -> list[Path]:
    """The example files whose route is registered."""
    return [p for p in example_files() if load_run_file(p).route in list_routes()]


def quick_spec(spec: RunSpec) -> RunSpec:
    """``spec`` with every stage's epochs (Parallel Training jobs' too) cut to a third: the
    training blocks its route reads, and each job's."""
    def cut(train: TrainSpec) -> TrainSpec:
        if train.steps is not None:
            return train.model_copy(update={"steps": _quick_epochs(train.steps)})
        return train.model_copy(update={"epochs": _quick_epochs(train.epochs)})

    recipe = dict(spec.recipe)
    if isinstance(recipe.get("jobs"), dict):
        jobs = {}
        for name, job in recipe["jobs"].items():
            job = dict(job)
            training = dict(job.get("training") or {})
            if training.get("steps") is not None:
                training["steps"] = _quick_epochs(training["steps"])
            else:
                training["epochs"] = _quick_epochs(training.get("epochs") or TrainSpec().epochs)
            job["training"] = training
            jobs[name] = job
        recipe["jobs"] = jobs
    # Only the blocks the route reads: one it ignores must keep its default, or the runner
    # refuses it (config.check_blocks).
    reads = getattr(get_route(spec.route), "RUN_FILE_BLOCKS", None)
    blocks = [b for b in ("source_training", "target_training", "training")
              if reads is None or b in reads]
    return spec.model_copy(update={
        **{block: cut(getattr(spec, block)) for block in blocks},
        "recipe": recipe,
    })


def _quick_epochs(epochs: int) -> int:
    return max(1, math.ceil(epochs * QUICK_EPOCH_FRACTION))


def run_demo(
    out: str | Path, resume: bool = False, progress: bool = True, quick: bool = False,
    seeds: int | None = None,
) -> list[Summary]:
    """Run every runnable example into ``out/<route>``; return their summaries in order.

    Args:
        out: the demo folder; each route's run folder goes under it.
        resume: continue a stopped demo (finished routes are read back, not retrained).
            Default False.
        progress: show progress (a line per route, and each run's own display). Default True.
        quick: a third of every example's epochs. Default False.
        seeds: seeds per example. Default: :data:`DEMO_SEEDS`, or 1 with ``quick``.
    """
    seeds = seeds or (1 if quick else DEMO_SEEDS)
    out = Path(out)
    paths = runnable_examples()
    summaries = []
    for i, path in enumerate(paths, start=1):
        spec = load_run_file(path)
        if quick:
            spec = quick_spec(spec)
        spec = spec.model_copy(update={"seeds": seeds})
        title = get_route(spec.route).ROUTE.title
        if progress:
            print(f"[{i}/{len(paths)}] {title}: {path.name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        summaries.append(run(spec, out / path.stem, resume=resume, progress=progress))
        if progress:
            print(f"[{i}/{len(paths)}] {title} done in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
    build_index(out, [(p.stem, out / p.stem) for p in paths])
    return summaries
