"""Read a run folder: the run file, the summary, the metrics lines and what is missing.

A run folder is what ``tlroutes run`` writes: ``run.yaml``, ``metrics.jsonl``, ``checkpoints/``,
``summary.json`` once finished and, with ``seeds: k > 1``, a ``seed-<s>/`` folder per seed
holding its own metrics and checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.summary import Summary

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
        name: the route's name as ``run.yaml`` gives it (a registered route name).
        route: the route's cube cell.
        spec: ``run.yaml`` parsed; ``run_text`` its text.
        summary: ``summary.json`` read back, or None when the run has not finished.
        curves: metrics lines by seed label (``""`` for a single-seed run, else ``"seed 3"``).
        best_epochs: the best epoch of each finished stage (of the first seed).
        seed_folders: each seed's folder by label (``{"": folder}`` for one seed).
        files: the route's own files (see :meth:`expect`) that exist, by name.
        missing: ``{file: why it matters}`` for what a finished run would hold but this lacks.
    """

    folder: Path
    name: str
    route: Route
    spec: dict[str, Any]
    run_text: str
    summary: Summary | None
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    best_epochs: dict[str, int] = field(default_factory=dict)
    seed_folders: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        """How many seeds the run file asks for."""
        return int(self.spec.get("seeds") or 1)

    @property
    def first_folder(self) -> Path:
        """The first seed's folder (the run folder itself for one seed)."""
        return next(iter(self.seed_folders.values()), self.folder)

    def expect(self, files: Mapping[str, str]) -> None:
        """Look for the route's own files in the first seed's folder.

        Args:
            files: ``{file name: why the report needs it}`` (a route's ``REPORT_FILES``). Each
                file found goes into :attr:`files`; each one missing into :attr:`missing`
                (by its path relative to the run folder) with its reason.
        """
        for name, why in files.items():
            path = self.first_folder / name
            if path.is_file():
                self.files[name] = path
            else:
                self.missing[str(path.relative_to(self.folder))] = why


def collect(run_dir: str | Path, *,
            route_of: Callable[[str], Route] = Route.parse) -> RunData:
    """Read the run folder ``run_dir``.

    Args:
        run_dir: the run folder.
        route_of: the cube cell of a route name. Default :meth:`Route.parse` (the built-in
            names); the report passes the route registry's, which knows plug-ins too.

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
        name = str(spec.get("route", ""))
        route = route_of(name)
    except (yaml.YAMLError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"{run_file} is damaged or names no route ({exc}); the report needs "
                          "the run file that `tlroutes run` saved there.") from None
    data = RunData(folder, name, route, spec, run_text, _read_summary(folder))
    seeds = int(spec.get("seeds") or 1)
    first = int(spec.get("seed") or 0)
    folders = {"": folder} if seeds == 1 else {
        f"seed {s}": folder / f"seed-{s}" for s in range(first, first + seeds)}
    data.seed_folders = folders
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
    return data


def _read_summary(folder: Path) -> Summary | None:
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is damaged ({exc}); run the route again or restore "
                          "it.") from None
    return Summary.from_dict(data, where=str(path))


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
