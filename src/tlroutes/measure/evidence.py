"""``tlroutes inspect``: the measured relation between problems, as one evidence object.

Problems come from anything a user has at hand: a loaded :class:`Problem`, a run file's data block
(:class:`DataSpec` or a dict), a dataset string such as ``digits:rotation=30,n=500`` (see
:func:`parse_data_arg`), or a run file, whose problems are all compared (source with target;
every simultaneous problem, or Parallel Training job, with every other).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import Tensor

from tlroutes.config import DataSpec, RunSpec, as_run_spec, load_run_file
from tlroutes.errors import ConfigError, did_you_mean, shorten
from tlroutes.measure.domain import VERDICT_SEEDS
from tlroutes.measure.placement import PairEvidence, measure_pair
from tlroutes.measure.transferability import TransferabilityEvidence, rank_trunks
from tlroutes.problem import Problem

DataLike = Problem | DataSpec | Mapping[str, Any] | str | Path
FeatureFn = Callable[[Tensor], Tensor]


@dataclass
class Evidence:
    """What ``tlroutes inspect`` measured."""

    problems: dict[str, dict[str, Any]]
    """Each problem's facts by name: modality, sample shape, task kind, labels, sizes."""
    pairs: list[PairEvidence]
    """One entry per compared pair, in order."""
    transferability: TransferabilityEvidence | None = None
    """Candidate trunks ranked for the last problem (the target), when candidates were given."""
    seconds: float = 0.0
    """Wall time of the measurement, seconds."""
    notes: list[str] = field(default_factory=list)
    """What could not be measured and why (e.g. a pretrained model as the only source)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``tlroutes inspect --json`` writes)."""
        return {
            "problems": self.problems,
            "pairs": [p.to_dict() for p in self.pairs],
            "transferability": None if self.transferability is None
            else self.transferability.to_dict(),
            "seconds": self.seconds,
            "notes": self.notes,
        }


def inspect(
    first: DataLike,
    second: DataLike | None = None,
    *,
    candidates: Mapping[str, FeatureFn] | None = None,
    source_heads: Mapping[str, FeatureFn] | None = None,
    source_model: FeatureFn | None = None,
    features: FeatureFn | None = None,
    seed: int = 0,
    alpha: float = 0.05,
    permutations: int = 200,
    max_samples: int = 2000,
    seeds: int = VERDICT_SEEDS,
) -> Evidence:
    """Measure how problems relate: domains (with controls), tasks and, optionally, trunks.

    Args:
        first: a problem, data block, dataset string or run file. A run file alone (``second``
            None) compares its own problems.
        second: the second problem (the target). Default None.
        candidates: trunks to rank for the target, name → features function (inputs → (N, D)).
            Default none.
        source_heads: for LEEP and NCE, candidate name → its source head (features → source
            logits). Default none (LEEP and NCE are skipped).
        source_model: a function from target inputs to source logits, for the task comparison's
            NCE and matched agreement. Default none.
        features: the representation for the domain tests (e.g. a trunk). Default: PCA fitted
            on the source.
        seed: seed of subsampling, permutations, folds and controls. Default 0.
        alpha: significance level of the domain tests. Default 0.05.
        permutations: permutations of the MMD test. Default 200.
        max_samples: samples per side used by the domain tests. Default 2000.
        seeds: measurement seeds behind each domain verdict (majority rule, see
            :func:`tlroutes.measure.domain.compare_domains`). Default 5.
    """
    start = time.perf_counter()
    notes: list[str] = []
    problems = _problems(first, second, seed, notes)
    pairs = []
    names = list(problems)
    # Sequential pairs are source → target; a set of simultaneous problems is compared pairwise.
    for a, b in itertools.combinations(names, 2):
        model = source_model if (a, b) == (names[0], names[-1]) else None
        # Through the placement's cache: a run that plans (route: auto) and then checks its
        # route's cell measures once.
        pairs.append(measure_pair(problems[a], problems[b], seed=seed, alpha=alpha,
                                  permutations=permutations, max_samples=max_samples,
                                  seeds=seeds, features=features, source_model=model))
    ranking = None
    if candidates:
        ranking = rank_trunks(dict(candidates), problems[names[-1]], seed=seed,
                              source_heads=dict(source_heads) if source_heads else None)
    return Evidence(
        problems={name: describe(p) for name, p in problems.items()},
        pairs=pairs, transferability=ranking, seconds=time.perf_counter() - start, notes=notes,
    )


def describe(problem: Problem) -> dict[str, Any]:
    """A problem's facts for the evidence: modality, shape, task, labels (declared, and those
    with samples), samples per class in each split (none for unlabelled data), and split
    sizes."""
    return {
        "name": problem.name,
        "domain": problem.domain.name,
        "modality": problem.domain.modality,
        "input_shape": list(problem.domain.input_shape),
        "task": problem.task.kind,
        "labels": list(problem.task.labels),
        "present_labels": list(problem.present_labels()),
        "class_counts": problem.class_counts,
        "unlabelled": problem.unlabelled,
        "train": len(problem.train), "val": len(problem.val), "test": len(problem.test),
    }


def _problems(first: DataLike, second: DataLike | None, seed: int,
              notes: list[str]) -> dict[str, Problem]:
    if second is None:
        spec = _as_run(first)
        if spec is None:
            raise ConfigError(
                "inspect needs two datasets, or one run file (whose problems it compares); got "
                f"only {first!r}.")
        return run_problems(spec, notes)
    a = load_data(first, seed, "first")
    b = load_data(second, seed, "second")
    if a.name == b.name:
        a.name, b.name = f"{a.name}-1", f"{b.name}-2"
    return {a.name: a, b.name: b}


def _as_run(obj: DataLike) -> RunSpec | None:
    """``obj`` as a run when it is one (a spec, a YAML path, a mapping with ``route``)."""
    is_file = isinstance(obj, (str, Path)) and str(obj).endswith((".yaml", ".yml"))
    if isinstance(obj, RunSpec) or is_file or (isinstance(obj, Mapping) and "route" in obj):
        return as_run_spec(obj)
    return None


def _job_data(name: str, job: object) -> DataSpec:
    """A Parallel Training job's ``data`` block, validated (the route validates the rest)."""
    job = {} if job is None else job
    data = job.get("data") if isinstance(job, dict) else None
    if not isinstance(job, dict) or not isinstance(data, (dict, type(None))):
        what = "the job" if not isinstance(job, dict) else "its data"
        raise ConfigError(
            f"Parallel Training job '{shorten(name)}': {what} must be a mapping (data:, model:, "
            f"training:), got {shorten(data if isinstance(job, dict) else job, quote=True)}.")
    try:
        return DataSpec.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"Parallel Training job '{shorten(name)}': its data block is not "
                          f"valid: {shorten(exc.errors()[0]['msg'], 200)}.") from None


def run_problems(spec: RunSpec, notes: list[str] | None = None) -> dict[str, Problem]:
    """The problems a run file joins, by name, loaded as its route would load them."""
    from tlroutes.data.load import load_problem

    notes = notes if notes is not None else []
    blocks: dict[str, DataSpec] = {}
    jobs = spec.recipe.get("jobs") if isinstance(spec.recipe, dict) else None
    if spec.problems:
        blocks = dict(spec.problems)
    elif isinstance(jobs, dict) and jobs:
        blocks = {name: _job_data(name, job) for name, job in jobs.items()}
    else:
        if spec.source is None:
            notes.append("The source is a pretrained model (source: null): there is no source "
                         "data to compare with the target.")
        else:
            blocks["source"] = spec.source
        blocks["target"] = spec.target
    problems = {}
    for name, block in blocks.items():
        # measurement reads no label it lacks (tlroutes.measure.task, .domain)
        problem = load_problem(block, spec.seed if block.seed is None else block.seed, name,
                               allow_unlabelled=True)
        problem.name = name
        problems[name] = problem
    return problems


def load_data(obj: DataLike, seed: int, role: str) -> Problem:
    """A :class:`Problem` from a problem, a data block, a dict or a dataset string."""
    from tlroutes.data.load import load_problem

    if isinstance(obj, Problem):
        return obj
    if isinstance(obj, (str, Path)):
        spec = parse_data_arg(str(obj))
    elif isinstance(obj, DataSpec):
        spec = obj
    elif isinstance(obj, Mapping):
        spec = DataSpec.model_validate(dict(obj))
    else:
        raise ConfigError(f"{role}: cannot read {type(obj).__name__} as data; give a dataset "
                          "name, a .npz path, a data block or a Problem.")
    return load_problem(spec, seed if spec.seed is None else spec.seed, role,
                        allow_unlabelled=True)


def parse_data_arg(text: str) -> DataSpec:
    """A data block from a dataset string: ``NAME[:key=value,...]``.

    ``NAME`` is a built-in dataset or an ``.npz`` path. Keys are data-block fields (``task``,
    ``n``, ``seed``, ``canvas``, ``domain``, ``modality``; ``classes`` as ``0-4`` or ``1/3/5``)
    or shift knobs (``rotation=30``, ``noise=0.2`` …). Example: ``digits:rotation=30,n=500``.
    """
    from tlroutes.data.shifts import IMAGE_SHIFTS, SIGNAL_SHIFTS

    name, _, rest = text.partition(":")
    fields: dict[str, Any] = {"dataset": name}
    shift: dict[str, float] = {}
    known = [f for f in DataSpec.model_fields if f not in ("dataset", "shift", "split")]
    knobs = list(IMAGE_SHIFTS) + list(SIGNAL_SHIFTS)
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"'{item}' in '{text}' needs the form key=value.")
        if key == "classes":
            fields[key] = _classes(value, text)
        elif key in known:
            fields[key] = value
        elif key in knobs:
            shift[key] = float(value)
        else:
            raise ConfigError(f"Unknown key '{key}' in '{text}'.{did_you_mean(key, known + knobs)}"
                              f" Keys: {', '.join(known + knobs)}.")
    fields["shift"] = shift
    try:
        return DataSpec.model_validate(fields)
    except Exception as exc:  # pydantic's message, made one clear line
        raise ConfigError(f"Dataset string '{text}': {exc}") from None


def _classes(value: str, text: str) -> list[int]:
    try:
        if "-" in value:
            lo, hi = value.split("-")
            return list(range(int(lo), int(hi) + 1))
        return [int(v) for v in value.split("/")]
    except ValueError:
        raise ConfigError(f"classes in '{text}' must look like 0-4 or 1/3/5; got '{value}'.") \
            from None


def trunk_candidates(items: list[str], target: Problem | None,
                     run_file: str | None = None) -> dict[str, FeatureFn]:
    """Feature functions for ``NAME=TRUNK[:WEIGHTS]`` items, built for ``target``'s domain.

    ``TRUNK`` is a registered trunk (e.g. ``cnn2d``, ``efficientnet_lite0``) behind its default
    stem; ``WEIGHTS`` a safetensors file of trunk weights, as ``model.weights`` in a run file.
    With no ``target``, the last problem of ``run_file`` is the target.
    """
    import torch

    from tlroutes.backbones.pretrained import load_pretrained
    from tlroutes.model import build_model

    if target is None:
        spec = _as_run(run_file) if run_file else None
        if spec is None:
            raise ConfigError("--candidate needs a target: give two datasets or a run file.")
        target = list(run_problems(spec).values())[-1]
    out: dict[str, FeatureFn] = {}
    for item in items:
        name, eq, rest = item.partition("=")
        if not eq or not rest:
            raise ConfigError(f"--candidate '{item}' needs the form NAME=TRUNK or "
                              "NAME=TRUNK:WEIGHTS, e.g. mine=cnn2d:runs/x/trunk.safetensors.")
        trunk, _, weights = rest.partition(":")
        model = build_model({target.domain.name: target.domain}, {target.task.name: target.task},
                            trunk, {}, "auto", {})
        if weights:
            load_pretrained(model.trunk, weights)
        model.eval()

        def features(x: Tensor, model=model) -> Tensor:
            with torch.no_grad():
                return model.features(x)

        out[name] = features
    return out


def source_model_from_run(run_dir: str | Path) -> Any:
    """The source model a sequential run trained (its ``source`` stage's best weights).

    The model is rebuilt from the run's ``run.yaml`` (trunk, stem and the source problem) with
    the stem and head names its weights carry; with several seeds the first seed's is used.
    """
    from tlroutes.data.load import load_problem
    from tlroutes.model import build_model
    from tlroutes.train.checkpoint import read_weights

    run_dir = Path(run_dir)
    if not (run_dir / "run.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no run.yaml); --source-run needs a "
                          "folder written by `tlroutes run`.")
    spec = load_run_file(run_dir / "run.yaml")
    folders = [run_dir, *sorted(run_dir.glob("seed-*"))]
    weights = next((f / "checkpoints" / "source" / "best.safetensors" for f in folders
                    if (f / "checkpoints" / "source" / "best.safetensors").is_file()), None)
    if spec.source is None or weights is None:
        raise ConfigError(f"{run_dir} holds no trained source model (checkpoints/source/"
                          "best.safetensors): only sequential runs with source data train one.")
    state = {k.removeprefix("model."): v for k, v in read_weights(weights).items()}
    stem = next(k.split(".")[1] for k in state if k.startswith("stems."))
    head = next(k.split(".")[1] for k in state if k.startswith("heads."))
    source = load_problem(spec.source, spec.seed if spec.source.seed is None
                          else spec.source.seed, "source")
    m = spec.model
    model = build_model({stem: source.domain}, {head: source.task}, m.trunk, m.trunk_args,
                        m.stem, m.stem_args)
    model.load_state_dict(state)
    return model.eval()
