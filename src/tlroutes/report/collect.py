"""Read a run folder: the run file, the summary, the metrics lines and what is missing.

A run folder is what ``tlroutes run`` writes: ``run.yaml``, ``metrics.jsonl``, ``checkpoints/``,
``summary.json`` once finished and, with ``seeds: k > 1``, a ``seed-<s>/`` folder per seed
holding its own metrics and checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlroutes.errors import ConfigError
from tlroutes.matrix import Route

NOT_A_RUN = (
    "{folder} is not a run folder: it holds no run.yaml. A run folder is what "
    "`tlroutes run RUN.yaml --out DIR` writes: run.yaml (the resolved run file), metrics.jsonl "
    "(one line per epoch), checkpoints/ and, once the run finishes, summary.json. Make one with "
    "`tlroutes run RUN.yaml --out DIR` (or `tlroutes demo`), then build the report of DIR."
)


@dataclass
class RunData:
    """What a run folder holds, read once.

    Attributes:
        folder: the run folder.
        route: the run's route (from ``run.yaml``).
        spec: ``run.yaml`` parsed; ``run_text`` its text.
        summary: ``summary.json``, or None when the run has not finished.
        curves: metrics lines by seed label (``""`` for a single-seed run, else ``"seed 3"``).
        best_epochs: the best epoch of each finished stage (of the first seed).
        features: the Domain Adaptation ``features.npz`` (of the first seed), or None.
        missing: ``{file: why it matters}`` for what a finished run would hold but this lacks.
    """

    folder: Path
    route: Route
    spec: dict[str, Any]
    run_text: str
    summary: dict[str, Any] | None
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    best_epochs: dict[str, int] = field(default_factory=dict)
    features: Path | None = None
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        """How many seeds the run file asks for."""
        return int(self.spec.get("seeds") or 1)


def collect(run_dir: str | Path) -> RunData:
    """Read the run folder ``run_dir``.

    Raises:
        ConfigError: ``run_dir`` holds no ``run.yaml`` (the message says what a run folder
            holds and how to make one), or ``run.yaml`` / ``summary.json`` cannot be read.
    """
    folder = Path(run_dir)
    run_file = folder / "run.yaml"
    if not run_file.is_file():
        raise ConfigError(NOT_A_RUN.format(folder=folder))
    run_text = run_file.read_text()
    try:
        spec = yaml.safe_load(run_text) or {}
        route = Route.parse(spec.get("route", ""))
    except (yaml.YAMLError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"{run_file} is damaged or names no route ({exc}); the report needs "
                          "the run file that `tlroutes run` saved there.") from None
    data = RunData(folder, route, spec, run_text, _read_summary(folder))
    seeds = int(spec.get("seeds") or 1)
    first = int(spec.get("seed") or 0)
    folders = {"": folder} if seeds == 1 else {
        f"seed {s}": folder / f"seed-{s}" for s in range(first, first + seeds)}
    for label, sub in folders.items():
        lines = _read_lines(sub / "metrics.jsonl")
        # Parallel Training: every job is a run folder of its own under jobs/.
        for job in sorted((sub / "jobs").glob("*/metrics.jsonl")):
            lines += [{**r, "stage": _job_stage(job.parent.name, r["stage"])}
                      for r in _read_lines(job)]
        if lines:
            data.curves[label] = lines
    first_folder = next(iter(folders.values()))
    data.best_epochs = _best_epochs(first_folder)
    for job in sorted((first_folder / "jobs").glob("*/")):
        data.best_epochs.update({_job_stage(job.name, stage): epoch
                                 for stage, epoch in _best_epochs(job).items()})
    if data.summary is None:
        data.missing["summary.json"] = (
            "the run has not finished (it stopped, failed or is still running); the report "
            "shows what exists so far. Continue it with `tlroutes run RUN.yaml --out "
            f"{folder} --resume`")
    if not data.curves:
        data.missing["metrics.jsonl"] = "no epoch has finished, so there are no learning curves"
    if route is Route.DOMAIN_ADAPTATION:
        npz = next(iter(folders.values())) / "features.npz"
        if npz.is_file():
            data.features = npz
        else:
            name = str(npz.relative_to(folder))
            data.missing[name] = (
                "the feature maps need the trunk features a finished Domain Adaptation run "
                "saves (tlroutes versions before the report was added did not save them)")
    return data


def _read_summary(folder: Path) -> dict[str, Any] | None:
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is damaged ({exc}); run the route again or restore "
                          "it.") from None


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The metrics lines; a torn last line (a run killed while writing) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "stage" in record and "epoch" in record:
            out.append(record)
    return out


def _job_stage(job: str, stage: str) -> str:
    return f"job {job}" if stage == job else f"job {job}: {stage}"


def _best_epochs(folder: Path) -> dict[str, int]:
    out = {}
    for done in sorted(folder.glob("checkpoints/*/done.json")):
        try:
            out[done.parent.name] = int(json.loads(done.read_text())["best_epoch"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return out
