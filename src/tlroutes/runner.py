"""``tlroutes run``: from a run file to a run folder.

The run folder holds ``run.yaml`` (the resolved run file), ``metrics.jsonl``, ``checkpoints/`` and,
when the run finishes, ``summary.json``; the run file's ``tracking:`` block adds ``tensorboard/``
and ``tracking.json`` (the MLflow run's id). With ``seeds: k > 1`` each seed gets a run folder of
its own under ``seed-<s>/`` and the top ``summary.json`` reports mean and spread. A stopped run
continues with ``resume=True``; the run file must then resolve to the same content as the one
saved, so that a resumed run is the same run.
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path
from typing import Any

import yaml

from tlroutes.config import RunSpec, dump_run, load_run_file
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.report import build_report
from tlroutes.routes import recipe_for
from tlroutes.routes.common import parse_recipe
from tlroutes.train.checkpoint import write_json_atomic
from tlroutes.train.engine import Trainer
from tlroutes.train.hardware import make_fabric
from tlroutes.train.progress import ProgressReporter
from tlroutes.train.tracking import Scoped, check_extras, open_tracker, run_params


def resolve(spec: RunSpec | str | Path, plan_out: list | None = None) -> RunSpec:
    """Validate a run (file or spec), including its route's ``recipe:`` block, with defaults.

    ``route: auto`` is planned here (:func:`tlroutes.planner.plan`): the planned route, with its
    recommended recipe under the run file's own ``recipe:`` keys. The plan is appended to
    ``plan_out`` when given. An order that contradicts the constraints is an error.
    """
    from tlroutes.planner import plan, plan_order

    if not isinstance(spec, RunSpec):
        spec = load_run_file(spec)
    if spec.route == "auto":
        planned = plan(spec)
        if plan_out is not None:
            plan_out.append(planned)
        spec = spec.model_copy(update={"route": planned.route.value,
                                       "recipe": {**planned.recipe, **spec.recipe}})
    route = Route.parse(spec.route)
    plan_order(spec, route)
    if spec.order is not None and spec.order != route.order:
        raise ConfigError(f"The run file says order: {spec.order}, but {route.title} is "
                          f"{route.order}. Drop order:, or choose a {spec.order} route.")
    module = recipe_for(route)
    recipe = parse_recipe(module.Recipe, spec.recipe, route)
    return spec.model_copy(update={"route": route.value,
                                   "recipe": recipe.model_dump(mode="json")})


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
    planned: list = []
    spec = resolve(spec, planned)
    route = Route.parse(spec.route)
    module = recipe_for(route)
    recipe = module.Recipe.model_validate(spec.recipe)
    check_extras(spec.tracking)  # before anything is written: a missing package costs no training
    out = Path(out)
    fabric = make_fabric(spec.hardware.build())
    problem = _check_folder(out, spec, resume) if fabric.global_rank == 0 else None
    problem = fabric.broadcast(problem)
    if problem:
        raise ConfigError(problem)
    if fabric.global_rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.yaml").write_text(dump_run(spec))
        if planned:
            (out / "plan.json").write_text(json.dumps(planned[0].to_dict(), indent=2))
    fabric.barrier()
    tracker = open_tracker(spec.tracking, out, resume=resume, enabled=fabric.global_rank == 0)
    try:
        tracker.start(run_params(spec))
        summaries = []
        for seed in range(spec.seed, spec.seed + spec.seeds):
            folder = out if spec.seeds == 1 else out / f"seed-{seed}"
            one = spec.model_copy(update={"seed": seed})
            tracked = tracker if spec.seeds == 1 else Scoped(tracker, f"seed-{seed}")
            trainer = Trainer(folder, seed=seed, resume=resume, progress=progress, fabric=fabric,
                              tracker=tracked)
            summary = module.run(one, recipe, trainer)
            summary["seed"] = seed
            if spec.seeds > 1 and fabric.global_rank == 0:
                write_json_atomic(folder / "summary.json", summary)
            summaries.append(summary)
        summary = summaries[0] if spec.seeds == 1 else aggregate(summaries)
        if fabric.global_rank == 0:
            write_json_atomic(out / "summary.json", summary)
            # Before the tracker's finish, which uploads what the folder holds then.
            build_report(out)
    except BaseException as exc:
        if fabric.global_rank == 0:
            _partial_report(out)
        try:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        except Exception as err:  # the run's own error is the one to report
            warnings.warn(f"Experiment tracking could not end the failed run: {err}", stacklevel=2)
        raise
    tracker.finish("FINISHED")
    return summary


def _partial_report(out: Path) -> None:
    """A report of what a failed run left, without hiding the run's own error."""
    try:
        build_report(out, tsne=False)
    except Exception as err:
        warnings.warn(f"Could not write the report of the stopped run: {err}", stacklevel=3)


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary over seeds: mean metrics, baseline and gain, with their spread.

    ``metrics``/``baseline``/``gain`` hold means; ``*_std`` the sample standard deviations;
    ``per_seed`` every seed's own summary. Negative transfer is flagged when the mean gain is
    below zero; ``negative_transfer_consistent`` when every seed's gain is.
    """
    first = summaries[0]
    out = {k: v for k, v in first.items()
           if k not in ("metrics", "baseline", "gain", "negative_transfer", "seed")}
    out["seeds"] = [s["seed"] for s in summaries]
    for key in ("metrics", "baseline"):
        if first.get(key) is None:
            out[key], out[f"{key}_std"] = None, None
            continue
        out[key] = {m: statistics.fmean(s[key][m] for s in summaries) for m in first[key]}
        out[f"{key}_std"] = {m: _std([s[key][m] for s in summaries]) for m in first[key]}
    if first.get("also"):
        out["also"] = {k: statistics.fmean(s["also"][k] for s in summaries) for k in first["also"]}
    gains = [s["gain"] for s in summaries if s.get("gain") is not None]
    out["gain"] = statistics.fmean(gains) if gains else None
    out["gain_std"] = _std(gains) if gains else None
    out["negative_transfer"] = None if not gains else out["gain"] < 0
    out["negative_transfer_consistent"] = None if not gains else all(g < 0 for g in gains)
    out["per_seed"] = summaries
    return out


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _check_folder(out: Path, spec: RunSpec, resume: bool) -> str | None:
    """None when ``out`` may be used, else the message saying why not."""
    saved = out / "run.yaml"
    if not resume:
        # A run.yaml alone (a run that stopped before training anything) holds no work.
        work = [p for p in ("checkpoints", "summary.json", "seed-*") if list(out.glob(p))]
        if work:
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
