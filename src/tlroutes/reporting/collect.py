"""Read a run folder: the run file, the summary, the metrics lines and what is missing.

A run folder is what ``tlroutes run`` writes: ``run.yaml``, ``metrics.jsonl``, ``checkpoints/``,
``summary.json`` once finished and, with ``seeds: k > 1``, a ``seed-<s>/`` folder per seed
holding its own metrics and checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.runfolder.reads import (
    damaged,
    read_done,
    read_metrics,
    read_run_yaml,
    read_summary,
)
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
            holds and how to make one).
        RunFolderError: a file it reads (``run.yaml``, ``summary.json``, ``metrics.jsonl``,
            ``done.json``) is damaged; the message names it and says what to do.
    """
    folder = Path(run_dir)
    run_file = folder / "run.yaml"
    if not run_file.is_file():
        raise ConfigError(NOT_A_RUN.format(folder=folder))
    spec = read_run_yaml(run_file)
    run_text = run_file.read_text(encoding="utf-8")
    name = spec["route"]
    try:
        route = route_of(name)
    except ConfigError as exc:
        raise damaged(run_file, f"it names no known route ({exc})") from None
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
    return read_summary(path)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The metrics lines, validated (a damaged line is one error naming it)."""
    return read_metrics(path)


def _job_stage(job: str, stage: str) -> str:
    return f"job {job}" if stage == job else f"job {job}: {stage}"


def _best_epochs(folder: Path) -> dict[str, int]:
    return {done.parent.name: read_done(done).best_epoch
            for done in sorted(folder.glob("checkpoints/*/done.json"))}
