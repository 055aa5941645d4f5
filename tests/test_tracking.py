"""Experiment tracking: MLflow (a real local SQLite store) and TensorBoard, read back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import small_run
from tlroutes import config
from tlroutes.config import parse_run
from tlroutes.errors import ConfigError, MissingExtraError
from tlroutes.runner import run
from tlroutes.train import engine
from tlroutes.train.metrics_log import MetricsLog
from tlroutes.train.tracking import (
    MlflowTracker,
    Scoped,
    Tracker,
    flatten,
    open_tracker,
    run_params,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A folder for one MLflow SQLite store shared by this file's tests: creating a store runs
    MLflow's schema migrations, several seconds each time."""
    return tmp_path_factory.mktemp("mlflow")


def _tracked_run(store: Path, experiment: str, **overrides) -> dict:
    spec = small_run(**overrides)
    spec["tracking"] = {
        "tensorboard": True,
        "mlflow": {"tracking_uri": f"sqlite:///{store}/mlflow.db", "experiment": experiment,
                   "artifact_location": str(store / experiment)},
    }
    return spec


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")


def _only_run(client, experiment: str):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, "a run folder is one MLflow run, resumed or not"
    return runs[0]


def _tensorboard(out: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return events


@pytest.mark.slow
def test_mlflow_and_tensorboard_read_back(tmp_path, store):
    out = tmp_path / "my-run"
    spec = _tracked_run(store, "read-back", source_training={"epochs": 1},
                        target_training={"epochs": 2})
    summary = run(parse_run(spec), out, progress=False)
    records = _records(out)
    assert [(r["stage"], r["epoch"]) for r in records] == [
        ("source", 0), ("target", 0), ("target", 1), ("baseline", 0), ("baseline", 1)]

    client = _client(store)
    found = _only_run(client, "read-back")
    assert found.info.status == "FINISHED" and found.info.run_name == "my-run"
    assert json.loads((out / "tracking.json").read_text())["mlflow"]["run_id"] == found.info.run_id
    params = found.data.params
    assert params["route"] == "task_fine_tuning"
    assert params["target_training.lr"] == "0.001"  # a default, filled in
    assert params["source_training.epochs"] == "1"
    assert params["target.classes"] == "[5, 6, 7, 8, 9]"
    assert params["recipe.schedule"] == "full"
    assert not any(k.startswith("tracking") for k in params)

    # One point per epoch per stage, at the record's line in metrics.jsonl: steps grow across
    # stages.
    for name in ("train_loss", "val_accuracy", "lr", "time_s", "epoch"):
        for stage in ("source", "target", "baseline"):
            history = client.get_metric_history(found.info.run_id, f"{stage}/{name}")
            lines = [(i, r[name]) for i, r in enumerate(records) if r["stage"] == stage]
            assert [m.step for m in history] == [i for i, _ in lines]
            assert [m.value for m in history] == pytest.approx([v for _, v in lines])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"summary.json", "run.yaml", "metrics.jsonl"} <= artifacts
    saved = client.download_artifacts(found.info.run_id, "summary.json", str(tmp_path))
    assert json.loads(Path(saved).read_text())["metrics"] == summary.metrics

    events = _tensorboard(out)
    tags = set(events.Tags()["scalars"])
    assert {f"{s}/val_accuracy" for s in ("source", "target", "baseline")} <= tags
    for tag in tags:
        stage, name = tag.split("/")
        lines = [(i, r[name]) for i, r in enumerate(records) if r["stage"] == stage]
        assert [e.step for e in events.Scalars(tag)] == [i for i, _ in lines]
        assert [e.value for e in events.Scalars(tag)] == pytest.approx(
            [v for _, v in lines], rel=1e-6)  # event files hold float32
    assert "run_file/text_summary" in events.Tags()["tensors"]

    # The report (written by the runner before finish) goes up with its folder of files.
    other = tmp_path / "with-report"
    (other / "report_files").mkdir(parents=True)
    (other / "report.html").write_text("<html></html>")
    (other / "report_files" / "curve.png").write_bytes(b"png")
    tracker = MlflowTracker(config.MlflowSpec(
        tracking_uri=f"sqlite:///{store}/mlflow.db", experiment="reports",
        artifact_location=str(store / "reports")), other)
    tracker.start({"route": "task_fine_tuning"})
    run_id = tracker.run_id
    tracker.finish("FINISHED")
    assert {a.path for a in client.list_artifacts(run_id)} == {"report.html", "report_files"}
    assert [a.path for a in client.list_artifacts(run_id, "report_files")] == [
        "report_files/curve.png"]


@pytest.mark.slow
def test_a_failed_then_resumed_run_continues_the_same_mlflow_run(tmp_path, store, monkeypatch):
    out = tmp_path / "r"
    spec = _tracked_run(store, "resume", source_training={"epochs": 1},
                        target_training={"epochs": 3}, baseline=False)
    validate = engine.Trainer._validate
    calls = []

    def fail_in_target_epoch_1(self, stage):
        calls.append(stage.name)
        if calls.count("target") == 2:
            raise RuntimeError("power cut")
        return validate(self, stage)

    monkeypatch.setattr(engine.Trainer, "_validate", fail_in_target_epoch_1)
    with pytest.raises(RuntimeError, match="power cut"):
        run(parse_run(spec), out, progress=False)
    client = _client(store)
    first = _only_run(client, "resume")
    assert first.info.status == "FAILED"
    assert {a.path for a in client.list_artifacts(first.info.run_id)} >= {"run.yaml"}

    monkeypatch.setattr(engine.Trainer, "_validate", validate)
    run(parse_run(spec), out, resume=True, progress=False)
    resumed = _only_run(client, "resume")
    assert resumed.info.run_id == first.info.run_id and resumed.info.status == "FINISHED"
    records = _records(out)
    assert [(r["stage"], r["epoch"]) for r in records] == [
        ("source", 0), ("target", 0), ("target", 1), ("target", 2)]
    history = client.get_metric_history(first.info.run_id, "target/train_loss")
    assert [m.step for m in history] == [1, 2, 3]  # no step twice, none backwards
    assert [m.value for m in history] == pytest.approx([r["train_loss"] for r in records[1:]])
    events = _tensorboard(out)
    assert [e.step for e in events.Scalars("target/train_loss")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("source/train_loss")] == [0]


class _Recorder(Tracker):
    def __init__(self) -> None:
        self.logged: list[tuple[int, str, int]] = []

    def log_metrics(self, record, step):
        self.logged.append((step, record["stage"], record["epoch"]))


def test_resume_tracks_only_lines_past_the_stopped_run(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = MetricsLog(path, tracker=_Recorder())
    for stage, epoch in [("source", 0), ("source", 1), ("target", 0)]:
        first.append({"stage": stage, "epoch": epoch, "train_loss": 1.0})
    assert first.tracker.logged == [(0, "source", 0), (1, "source", 1), (2, "target", 0)]

    # Killed after the checkpoint of target epoch 1 but before its line was written: the resumed
    # stage rewrites its lines from the checkpoint (epochs 0 and 1); only epoch 1 is new.
    resumed = MetricsLog(path, tracker=_Recorder())
    target = [{"stage": "target", "epoch": e, "train_loss": 1.0} for e in (0, 1)]
    resumed.replace_stage("target", target)
    resumed.append({"stage": "target", "epoch": 2, "train_loss": 1.0})
    assert resumed.tracker.logged == [(3, "target", 1), (4, "target", 2)]
    assert len(resumed.read()) == 5

    # A checkpoint older than the lines written (the newest one was damaged): those epochs run
    # again, and the steps already tracked are not tracked twice.
    again = MetricsLog(path, tracker=_Recorder())
    again.replace_stage("target", target[:1])
    for epoch in (1, 2, 3):
        again.append({"stage": "target", "epoch": epoch, "train_loss": 1.0})
    assert again.tracker.logged == [(5, "target", 3)]


@pytest.mark.parametrize(("block", "package", "extra"), [
    ({"mlflow": {}}, "mlflow", "mlflow"),
    ({"tensorboard": True}, "tensorboard", "tensorboard"),
])
def test_a_missing_package_stops_the_run_before_training(tmp_path, monkeypatch, block, package,
                                                          extra):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import <package>` fail
    out = tmp_path / "out"
    with pytest.raises(MissingExtraError) as caught:
        run(parse_run(small_run(tracking=block)), out, progress=False)
    message = str(caught.value)
    assert f"tracking.{extra}" in message and f"tlroutes[{extra}]" in message
    assert not out.exists(), "nothing may be written (or trained) before the check"


def test_unknown_tracking_keys_suggest_the_near_miss():
    with pytest.raises(ConfigError, match=r"tracking.tensorbord'. Did you mean 'tensorboard'"):
        parse_run(small_run(tracking={"tensorbord": True}))
    with pytest.raises(ConfigError, match=r"tracking.mlflow.experimnt'. Did you mean "
                                          r"'experiment'\?.*run_name"):
        parse_run(small_run(tracking={"mlflow": {"experimnt": "x"}}))


def test_tracking_block_defaults_and_shorthand():
    spec = parse_run(small_run())
    assert spec.tracking.tensorboard is False and spec.tracking.mlflow is None
    on = parse_run(small_run(tracking={"mlflow": True})).tracking.mlflow
    assert on == config.MlflowSpec() and on.experiment == "tlroutes" and on.artifacts is True
    for model in (config.TrackingSpec, config.MlflowSpec):
        assert model.__doc__
        for name, field in model.model_fields.items():
            assert "default" in (field.description or "").lower(), f"{model.__name__}.{name}"


def test_params_are_the_flattened_run_file_and_other_ranks_track_nothing(tmp_path):
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1, 2], "e": None, "f": "x"}) == {
        "a.b": "1", "a.c": "{}", "d": "[1, 2]", "e": "null", "f": "x"}
    params = run_params(parse_run(small_run(tracking={"tensorboard": True})))
    assert params["model.trunk"] == "mlp" and params["hardware.accelerator"] == "cpu"
    assert not any(k.startswith("tracking") for k in params)
    seed = _Recorder()
    Scoped(seed, "seed-4").log_metrics({"stage": "target", "epoch": 0}, 7)
    assert seed.logged == [(7, "seed-4/target", 0)]  # one seed of several: its own names
    spec = parse_run(small_run(tracking={"tensorboard": True, "mlflow": True})).tracking
    assert type(open_tracker(spec, tmp_path, enabled=False)) is Tracker
    assert not list(tmp_path.iterdir())
