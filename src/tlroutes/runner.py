"""``tlroutes run``: from a run file to a run folder.

The run folder holds ``run.yaml`` (the resolved run file), ``metrics.jsonl``, ``checkpoints/`` and,
when the run finishes, ``summary.json``; the run file's ``tracking:`` block adds ``tensorboard/``
and ``tracking.json`` (the MLflow run's id). With ``seeds: k > 1`` each seed gets a run folder of
its own under ``seed-<s>/`` and the top ``summary.json`` reports mean and spread. A stopped run
continues with ``resume=True``; the run file must then resolve to the same content as the one
saved, and the input files to the same fingerprint (``inputs.json``), so that a resumed run is
the same run.

The folder is a small database (:mod:`tlroutes.runfolder`): a run holds its lock
(``.tlroutes.lock``) from the check to the end, so a second run or resume into it is refused at
once, naming the holder's process id; every file is written atomically and never through a
symlink; ``run.yaml`` is written once, when the run starts.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tlroutes.backbones.registry import check_model_args
from tlroutes.config import (
    ModelSpec,
    RunLike,
    RunSpec,
    as_run_spec,
    check_blocks,
    dump_run,
    iter_specs,
)
from tlroutes.data.load import labels_needed_by
from tlroutes.data.sources.splitting import run_folder
from tlroutes.errors import ConfigError, RunFolderError, TLRoutesError
from tlroutes.manifest import recording
from tlroutes.measure.placement import following, forget_last_placement, last_placement
from tlroutes.reporting.build import build_report
from tlroutes.routes.common import RecipeSpec, parse_recipe
from tlroutes.routes.registry import get_route, route_name, title_of
from tlroutes.runfolder import RunLock, register_root, write_json, write_text
from tlroutes.runfolder.failure import clear_failure, record_failure
from tlroutes.runfolder.fingerprint import (
    FINGERPRINT_FILE,
    Fingerprint,
    check_inputs,
    fingerprint,
)
from tlroutes.runfolder.reads import read_model, read_run_yaml
from tlroutes.summary import Summary, aggregate
from tlroutes.train.checkpoint import write_json_atomic
from tlroutes.train.engine import Trainer
from tlroutes.train.hardware import make_fabric
from tlroutes.train.precision import set_evaluation_precision
from tlroutes.train.progress import ProgressReporter
from tlroutes.train.tracking import Scoped, check_extras, open_tracker, run_params

if TYPE_CHECKING:
    from tlroutes.planner import Plan

__all__ = ["Resolved", "aggregate", "resolve", "run"]


@dataclass(frozen=True)
class Resolved:
    """A run file checked once: the spec to save, the route's module and its typed recipe.

    Attributes:
        spec: the run with every default filled in, ``route`` the registered name and
            ``recipe`` the typed recipe's fields (what ``run.yaml`` saves; dumped, not
            validated again).
        module: the route's module (see :mod:`tlroutes.routes.registry`).
        recipe: the route's ``Recipe``, validated.
        plan: the plan of a ``route: auto`` run, else None.
    """

    spec: RunSpec
    module: ModuleType
    recipe: RecipeSpec
    plan: Plan | None = None


def resolve(spec: RunLike) -> Resolved:
    """Validate a run (file or spec), including its route's ``recipe:`` block, with defaults.

    ``route: auto`` is planned here (:func:`tlroutes.planner.plan`): the planned route, with its
    recommended recipe under the run file's own ``recipe:`` keys. An order that contradicts the
    constraints is an error.

    Raises:
        ConfigError: the run file, its route or its recipe is invalid.
    """
    from tlroutes.planner import plan, plan_order

    spec = as_run_spec(spec)
    planned = None
    if spec.route == "auto":
        planned = plan(spec)
        spec = spec.model_copy(update={"route": planned.route.value,
                                       "recipe": {**planned.recipe, **spec.recipe}})
    name = route_name(spec.route)
    module = get_route(name)
    route = module.ROUTE
    plan_order(spec, route)
    if spec.order is not None and spec.order != route.order:
        raise ConfigError(f"The run file says order: {spec.order}, but {route.title} is "
                          f"{route.order}. Drop order:, or choose a {spec.order} route.")
    recipe = parse_recipe(module.Recipe, spec.recipe, route)
    blocks = getattr(module, "RUN_FILE_BLOCKS", None)
    check_blocks(spec, blocks, title_of(module))
    refused = getattr(module, "REFUSED_PRECISIONS", {}).get(spec.hardware.precision)
    if refused:
        raise ConfigError(f"{title_of(module)} cannot train in hardware.precision "
                          f"'{spec.hardware.precision}': {refused}.")
    _check_models(spec, blocks, recipe)
    saved = spec.model_copy(update={"route": name, "recipe": recipe.model_dump(mode="json")})
    return Resolved(saved, module, recipe, planned)


def _check_models(spec: RunSpec, blocks: frozenset[str] | None, recipe: RecipeSpec) -> None:
    """Check every model block the run builds (the top level's, when the route reads it, and
    any in its recipe, e.g. Parallel Training's jobs) before any data is loaded: an argument
    that does not fit its trunk costs nothing."""
    models = list(iter_specs(recipe, ModelSpec))
    if blocks is None or "model" in blocks:
        models.insert(0, spec.model)
    for m in models:
        check_model_args(m.trunk, m.trunk_args, m.stem, m.stem_args)


def run(
    spec: RunLike | Resolved,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool | ProgressReporter = True,
) -> Summary:
    """Train what ``spec`` describes into the run folder ``out``; return the summary.

    Args:
        spec: a :class:`RunSpec`, the path of a YAML run file, or its content as a dict (or
            a run :func:`resolve` already checked, as :func:`tlroutes.fit` passes it).
        out: the run folder; created when missing.
        resume: continue a stopped run in ``out``. Default False, which refuses a folder that
            already holds a run (work is never overwritten).
        progress: show progress (or a :class:`ProgressReporter` to report to). Default True.

    Returns:
        The run's :class:`~tlroutes.summary.Summary` (over all seeds when ``seeds > 1``), also
        written as ``summary.json`` (:meth:`Summary.to_dict`).
    """
    resolved = spec if isinstance(spec, Resolved) else resolve(spec)
    spec = resolved.spec
    check_extras(spec.tracking)  # before anything is written: a missing package costs no training
    out = Path(out)
    fabric = make_fabric(spec.hardware.build())
    lock, problem = None, None
    if fabric.global_rank == 0:  # only the first process locks, checks and writes the folder
        lock, problem = _open_folder(out, resolved, resume)
    problem = fabric.broadcast(problem)
    if problem is not None:
        raise problem
    try:
        fabric.barrier()
        # Each trained model gets manifest.json beside its weights (tlroutes.manifest).
        with recording(route=spec.route, model_spec=spec.model.model_dump(mode="json")):
            return _run_in(out, resolved, resume, progress, fabric)
    finally:
        # the run's Trainers evaluated under its precision; what follows in this process
        # (another run, the user's own evaluation) starts from plain float32 again
        set_evaluation_precision(None)
        if lock is not None:
            lock.release()


def _run_in(out: Path, resolved: Resolved, resume: bool, progress: bool | ProgressReporter,
            fabric: Any) -> Summary:
    """The run itself, in a folder this run holds."""
    spec, module, recipe = resolved.spec, resolved.module, resolved.recipe
    tracker = open_tracker(spec.tracking, out, resume=resume, enabled=fabric.global_rank == 0)
    try:
        tracker.start(run_params(spec))
        summaries: list[Summary] = []
        for seed in range(spec.seed, spec.seed + spec.seeds):
            folder = out if spec.seeds == 1 else out / f"seed-{seed}"
            one = spec.model_copy(update={"seed": seed})
            tracked = tracker if spec.seeds == 1 else Scoped(tracker, f"seed-{seed}")
            trainer = Trainer(folder, seed=seed, resume=resume, progress=progress, fabric=fabric,
                              tracker=tracked)
            # The summary names the route as the registry does (a plug-in shares its cell's
            # Route with a built-in route, so its summarise() cannot tell its own name).
            forget_last_placement()
            # A planned run checks its route's cell with its plan's placement: each seed's data
            # is another draw, and measured again a borderline pair could refuse the plan.
            # Automatic splits of unsplit data are kept in the seed's folder and reused on resume.
            with following(resolved.plan.placements if resolved.plan is not None else []), \
                    run_folder(folder), labels_needed_by(
                        f"the {title_of(module)} route (it trains on or scores each problem it "
                        "loads with its labels)"):
                summary = module.run(one, recipe, trainer).model_copy(
                    update={"seed": seed, "route": spec.route, "title": title_of(module)})
            _add_label_relation(summary)
            if spec.seeds > 1 and fabric.global_rank == 0:
                write_json_atomic(folder / "summary.json", summary.to_dict())
            summaries.append(summary)
        summary = summaries[0] if spec.seeds == 1 else aggregate(summaries)
        if fabric.global_rank == 0:
            write_json_atomic(out / "summary.json", summary.to_dict())
            clear_failure(out)  # an earlier attempt's record, now overcome
            # Before the tracker's finish, which uploads what the folder holds then.
            build_report(out)
    except BaseException as exc:
        if fabric.global_rank == 0:
            record_failure(out, exc)  # before the report, which shows it
            _partial_report(out, exc)
        try:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        except Exception as err:  # the run's own error is the one to report
            warnings.warn(f"Experiment tracking could not end the failed run: {err}", stacklevel=2)
        raise
    tracker.finish("FINISHED")
    return summary


def _add_label_relation(summary: Summary) -> None:
    """The classes present on each side, as the route's cell check placed its source and target
    (:func:`tlroutes.measure.placement.place`), into ``details["labels"]`` unless the route set
    it: the report warns from it when a target class has no source sample."""
    placed = last_placement()
    labels = None if placed is None else placed.evidence.task.labels
    if labels is not None and "labels" not in summary.details:
        summary.details["labels"] = labels.to_dict()


def _partial_report(out: Path, failure: BaseException) -> None:
    """A report of what a failed run left, without hiding the run's own error."""
    try:
        build_report(out, tsne=False)
    except RunFolderError as err:
        # A damaged file stopped the run and then the report: the run's message says it once.
        if not isinstance(failure, TLRoutesError):
            warnings.warn(f"Could not write the report of the stopped run: {err}", stacklevel=3)
    except Exception as err:
        warnings.warn(f"Could not write the report of the stopped run: {err}", stacklevel=3)


def _open_folder(out: Path, resolved: Resolved,
                 resume: bool) -> tuple[RunLock | None, TLRoutesError | None]:
    """Lock ``out``, check that this run may use it and write what a run's start writes.

    Returns the lock held (None on refusal) and the refusal (None when the run may go on). The
    start writes ``run.yaml`` (once: a resume reads and compares it, never rewrites it),
    ``plan.json`` for ``route: auto`` and ``inputs.json``, the inputs' fingerprint (a resume
    checks the inputs against it instead); every file atomically.
    """
    if resume and not (out / "run.yaml").exists() and not out.is_dir():
        return None, ConfigError(f"Nothing to resume in {out}: it does not exist. Start the run "
                                 "without --resume.")
    register_root(out)
    try:
        lock = RunLock.acquire(out)
    except TLRoutesError as exc:
        return None, exc
    try:
        problem = _check_folder(out, resolved.spec, resume)
        if problem is not None:
            raise ConfigError(problem)
        spec_data = resolved.spec.model_dump(mode="json")
        inputs = fingerprint(spec_data)
        saved_inputs = out / FINGERPRINT_FILE
        if resume and saved_inputs.is_file():
            check_inputs(read_model(saved_inputs, Fingerprint, FINGERPRINT_FILE), inputs, out)
        else:  # a new run, or a run folder from before fingerprints: recorded from now on
            write_json(saved_inputs, inputs.model_dump(mode="json"))
        if not resume:
            clear_failure(out)  # a fresh start: an earlier attempt's record is stale
            write_text(out / "run.yaml", dump_run(resolved.spec))
            if resolved.plan is not None:
                write_json(out / "plan.json", resolved.plan.to_dict())
    except TLRoutesError as exc:
        lock.release()
        return None, exc
    except BaseException:
        lock.release()
        raise
    return lock, None


def _check_folder(out: Path, spec: RunSpec, resume: bool) -> str | None:
    """None when ``out`` may be used, else the message saying why not.

    Raises:
        RunFolderError: resuming, and ``run.yaml`` is damaged (the message says what to do).
    """
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
    before = read_run_yaml(saved)
    now = spec.model_dump(mode="json")
    if _normalise(before) != _normalise(now):
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return (f"The run file differs from the one {out} was started with (fields: "
                f"{', '.join(changed)}). Resume with the same run file, or start a new --out.")
    return None


def _normalise(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=str)
