"""Experiment tracking: ``metrics.jsonl`` always; TensorBoard and MLflow when the run file asks.

A :class:`Tracker` sees a run in four calls: :meth:`~Tracker.start` with the run's parameters,
:meth:`~Tracker.log_metrics` once per finished epoch of any stage, :meth:`~Tracker.log_artifacts`
and :meth:`~Tracker.finish` at the end. The base class does nothing (``metrics.jsonl`` is written
by :class:`~tlroutes.train.metrics_log.MetricsLog` whatever the tracker), so it is also the
tracker of every data-parallel process but the first.

Names and steps: an epoch's record ``{"stage": "target", "epoch": 3, "train_loss": 0.4,
"val_accuracy": 0.9, "lr": 1e-3, "time_s": 0.2}`` becomes the scalars ``target/epoch``,
``target/train_loss``, ``target/val_accuracy``, ``target/lr`` and ``target/time_s``. The step is
the record's line number in ``metrics.jsonl`` (from 0), so it grows across stages, and a resumed
run, whose ``metrics.jsonl`` keeps the lines of the epochs already done, carries on counting
where the stopped one left off instead of starting again.

Run folder files: ``tensorboard/`` (TensorBoard's event files) and ``tracking.json`` (the MLflow
run's id, so that a resumed run continues the same MLflow run).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

from tlroutes.config import MlflowSpec, RunSpec, TrackingSpec
from tlroutes.errors import require_extra
from tlroutes.train.checkpoint import write_json_atomic

#: What :meth:`MlflowTracker.log_artifacts` uploads from the run folder, when present.
ARTIFACTS = ("summary.json", "run.yaml", "metrics.jsonl", "report.html", "report.md",
             "report_files")
#: The run folder's file that remembers the MLflow run.
STATE_FILE = "tracking.json"
#: MLflow's default store, as MLflow itself picks when nothing is set: a SQLite file in the
#: current directory.
DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"


class Tracker:
    """The tracker interface; this base class logs nothing (``metrics.jsonl`` is enough)."""

    def start(self, params: dict[str, str]) -> None:
        """Begin (or, on resume, continue) the run; ``params`` maps dotted names to values."""

    def log_metrics(self, record: dict[str, Any], step: int) -> None:
        """Log one epoch's record (a ``metrics.jsonl`` line) at global ``step``."""

    def log_artifacts(self, folder: Path) -> None:
        """Keep the run folder's result files (:data:`ARTIFACTS`) with the tracked run."""

    def finish(self, status: str = "FINISHED") -> None:
        """End the run: ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"`` (interrupted)."""


class TensorBoardTracker(Tracker):
    """Scalars to TensorBoard event files in ``log_dir`` (needs the package ``tensorboard``).

    Args:
        log_dir: the folder of event files; a resumed run adds a new file beside the old ones.
    """

    def __init__(self, log_dir: Path) -> None:
        require_extra("tensorboard", "tensorboard", "tracking.tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        # A resumed run adds event files beside the first run's, which already hold the params.
        self.fresh = not any(self.log_dir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def start(self, params: dict[str, str]) -> None:
        if not self.fresh:
            return
        # add_hparams would open a sub-run of its own; a text table keeps one run per folder.
        rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("run_file", "| field | value |\n| --- | --- |\n" + rows, 0)
        self.writer.flush()

    def log_metrics(self, record: dict[str, Any], step: int) -> None:
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, step)
        # One flush per epoch: a killed run keeps every epoch it finished.
        self.writer.flush()

    def finish(self, status: str = "FINISHED") -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    """Parameters, metrics and artifacts to MLflow (needs the package ``mlflow``).

    Uses :class:`mlflow.tracking.MlflowClient` directly rather than MLflow's global "active run",
    so a process can hold several runs and nothing leaks between them.

    Args:
        spec: the run file's ``tracking.mlflow`` block.
        run_dir: the run folder: names the MLflow run by default, holds ``tracking.json`` and the
            artifacts.
        resume: continue the MLflow run recorded in ``tracking.json`` when there is one.
            Default False (a new MLflow run).
    """

    def __init__(self, spec: MlflowSpec, run_dir: Path, *, resume: bool = False) -> None:
        _quiet_mlflow_environment()
        require_extra("mlflow", "mlflow", "tracking.mlflow")
        from mlflow.tracking import MlflowClient

        self.spec, self.run_dir, self.resume = spec, Path(run_dir), resume
        self.tracking_uri = (spec.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                             or DEFAULT_MLFLOW_URI)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.run_id: str | None = None

    def start(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self.run_id = self._previous_run() if self.resume else None
        if self.run_id is not None:
            # Same run file as before (the runner checks), so the parameters are already there.
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment_id = self._experiment_id()
        run = self.client.create_run(
            experiment_id, run_name=self.spec.run_name or self.run_dir.resolve().name,
            tags={"tlroutes.run_folder": str(self.run_dir.resolve())},
        )
        self.run_id = run.info.run_id
        write_json_atomic(self.run_dir / STATE_FILE, {
            "mlflow": {"run_id": self.run_id, "experiment_id": experiment_id,
                       "tracking_uri": self.tracking_uri},
        })
        items = [Param(_key(k), v[:6000]) for k, v in params.items()]  # MLflow's value limit
        for i in range(0, len(items), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, record: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_key(k), v, now, step) for k, v in scalars(record).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_artifacts(self, folder: Path) -> None:
        if not self.spec.artifacts or self.run_id is None:
            return
        for name in ARTIFACTS:
            path = Path(folder) / name
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        try:
            # Logged whatever the status: a failed run's run.yaml and metrics.jsonl tell why.
            self.log_artifacts(self.run_dir)
            if status == "FINISHED" and self.spec.artifacts:
                # the trained model, as a pyfunc that mlflow.pyfunc.load_model reads back
                from tlroutes.use.mlflow_model import log_model

                log_model(self.client, self.run_id, self.run_dir)
        finally:
            self.client.set_terminated(self.run_id, status=status)
            self.run_id = None

    def _previous_run(self) -> str | None:
        state = self.run_dir / STATE_FILE
        if not state.is_file():
            return None
        from tlroutes.runfolder.reads import damaged, read_json

        data = read_json(state, STATE_FILE)
        mlflow_state = data.get("mlflow", {}) if isinstance(data, dict) else None
        if not isinstance(mlflow_state, dict):
            raise damaged(state, "it is not the tracking state tlroutes writes")
        run_id = mlflow_state.get("run_id")
        if run_id is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            warnings.warn(
                f"MLflow run {run_id} (from {state}) is not in {self.tracking_uri}; the resumed "
                "run is logged as a new MLflow run, from the resumed epochs on.", stacklevel=2,
            )
            return None
        return run_id

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.spec.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, self.spec.artifact_location)
        except MlflowException:
            # Another run created it since we looked.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


class FanOut(Tracker):
    """Every call goes to each of ``trackers``; :meth:`finish` reaches them all even if one
    fails."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = list(trackers)

    def start(self, params: dict[str, str]) -> None:
        for t in self.trackers:
            t.start(params)

    def log_metrics(self, record: dict[str, Any], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(record, step)

    def log_artifacts(self, folder: Path) -> None:
        for t in self.trackers:
            t.log_artifacts(folder)

    def finish(self, status: str = "FINISHED") -> None:
        error: BaseException | None = None
        for t in self.trackers:
            try:
                t.finish(status)
            except Exception as exc:  # finish the others, then report the first problem
                error = error or exc
        if error is not None:
            raise error


class Scoped(Tracker):
    """Metrics of ``tracker`` under ``<scope>/<stage>/<metric>`` (one seed of a multi-seed run);
    start, artifacts and finish belong to the whole run and are not passed on."""

    def __init__(self, tracker: Tracker, scope: str) -> None:
        self.tracker, self.scope = tracker, scope

    def log_metrics(self, record: dict[str, Any], step: int) -> None:
        self.tracker.log_metrics({**record, "stage": f"{self.scope}/{record['stage']}"}, step)


def check_extras(spec: TrackingSpec) -> None:
    """Raise :class:`~tlroutes.errors.MissingExtraError` for a tracker whose package is missing.

    Called before anything trains, so that a missing package costs no training.
    """
    if spec.tensorboard:
        require_extra("tensorboard", "tensorboard", "tracking.tensorboard")
    if spec.mlflow is not None:
        _quiet_mlflow_environment()
        require_extra("mlflow", "mlflow", "tracking.mlflow")


def open_tracker(spec: TrackingSpec, run_dir: Path, *, resume: bool = False,
                 enabled: bool = True) -> Tracker:
    """The tracker the run file's ``tracking:`` block asks for.

    Args:
        spec: the ``tracking:`` block.
        run_dir: the run folder.
        resume: continue the tracked run of a stopped run. Default False.
        enabled: False (every data-parallel process but the first) gives the no-op tracker.
            Default True.
    """
    if not enabled:
        return Tracker()
    trackers: list[Tracker] = []
    if spec.tensorboard:
        trackers.append(TensorBoardTracker(Path(run_dir) / "tensorboard"))
    if spec.mlflow is not None:
        trackers.append(MlflowTracker(spec.mlflow, Path(run_dir), resume=resume))
    if not trackers:
        return Tracker()
    return trackers[0] if len(trackers) == 1 else FanOut(trackers)


def run_params(spec: RunSpec) -> dict[str, str]:
    """The resolved run file, flattened to dotted names (``target_training.lr``), without the
    ``tracking:`` block itself."""
    data = spec.model_dump(mode="json")
    data.pop("tracking", None)
    return flatten(data)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": "1", "c": "[1, 2]"}``.

    Mappings nest into dotted names; lists and empty mappings stay one value (JSON text).
    """
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` record's numbers as ``<stage>/<key>`` → value."""
    stage = record.get("stage", "run")
    return {f"{stage}/{k}": float(v) for k, v in record.items()
            if k != "stage" and isinstance(v, int | float) and math.isfinite(v)}


def _key(name: str) -> str:
    # MLflow keys allow letters, digits, _ - . / and spaces; dict keys of a run file may hold more.
    return re.sub(r"[^\w\-. /]", "_", name)


def _quiet_mlflow_environment() -> None:
    """Before MLflow is imported: no usage telemetry (it would phone home) and no GitPython
    warning when git is missing. A user's own setting of either variable wins."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
