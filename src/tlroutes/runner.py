"""``tlroutes run``: from a run file to a run folder.

The run folder holds ``run.yaml`` (the resolved run file), ``metrics.jsonl``, ``checkpoints/`` and,
when the run finishes, ``summary.json``. A stopped run continues with ``resume=True``; the run file
must then resolve to the same content as the one saved, so that a resumed run is the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tlroutes.config import RunSpec, dump_run, load_run_file
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.routes import recipe_for
from tlroutes.train.checkpoint import write_json_atomic
from tlroutes.train.engine import Trainer
from tlroutes.train.hardware import make_fabric
from tlroutes.train.progress import ProgressReporter


def run(
    spec: RunSpec | str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool | ProgressReporter = True,
) -> dict[str, Any]:
    """Train what ``spec`` describes into the run folder ``out``; return the summary.

    Args:
        spec: a :class:`RunSpec` or the path of a run file.
        out: the run folder; created when missing.
        resume: continue a stopped run in ``out``. Default False, which refuses a folder that
            already holds a run (work is never overwritten).
        progress: show progress. Default True.
    """
    if not isinstance(spec, RunSpec):
        spec = load_run_file(spec)
    route = Route.parse(spec.route)
    recipe = recipe_for(route)
    out = Path(out)
    fabric = make_fabric(spec.hardware.build())
    problem = _check_folder(out, spec, resume) if fabric.global_rank == 0 else None
    problem = fabric.broadcast(problem)
    if problem:
        raise ConfigError(problem)
    if fabric.global_rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.yaml").write_text(dump_run(spec))
    fabric.barrier()
    trainer = Trainer(out, seed=spec.seed, resume=resume, progress=progress, fabric=fabric)
    summary = recipe(spec, trainer)
    summary["seed"] = spec.seed
    if fabric.global_rank == 0:
        write_json_atomic(out / "summary.json", summary)
    return summary


def _check_folder(out: Path, spec: RunSpec, resume: bool) -> str | None:
    """None when ``out`` may be used, else the message saying why not."""
    saved = out / "run.yaml"
    if not resume:
        if saved.exists() or (out / "checkpoints").exists():
            return (f"{out} already holds a run. Pass --resume to continue it, or choose another "
                    "--out folder.")
        return None
    if not saved.exists():
        return f"Nothing to resume in {out}: it holds no run.yaml. Start the run without --resume."
    try:
        before = yaml.safe_load(saved.read_text())
    except yaml.YAMLError:
        return f"{saved} is damaged; cannot resume from it."
    now = spec.model_dump(mode="json")
    if _normalise(before) != _normalise(now):
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return (f"The run file differs from the one {out} was started with (fields: "
                f"{', '.join(changed)}). Resume with the same run file, or start a new --out.")
    return None


def _normalise(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)

