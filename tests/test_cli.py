"""The command line: the cube, a run folder, the run-file reference."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import BaseModel

from tests.conftest import cli, small_run, write_run
from tlroutes import config
from tlroutes.matrix import Route


def test_routes_prints_all_eight_and_draws_the_picture(tmp_path):
    proc = cli("routes", "--highlight", "task-adaptation", "--picture", str(tmp_path / "c.png"),
               check=True)
    for route in Route:
        for word in route.title.split():
            assert word in proc.stdout
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_run_file_field_documents_its_default():
    models = [config.RunSpec, config.DataSpec, config.TransformSpec, config.ModelSpec,
              config.TrainSpec,
              config.HardwareSpec, config.ConstraintSpec, config.TrackingSpec, config.MlflowSpec]
    for model in models:
        assert model.__doc__
        for name, field in model.model_fields.items():
            text = field.description or ""
            assert text, f"{model.__name__}.{name} has no description"
            if not field.is_required() and not (isinstance(field.annotation, type)
                                                and issubclass(field.annotation, BaseModel)):
                assert "default" in text.lower(), f"{model.__name__}.{name}: default undocumented"


@pytest.mark.slow
def test_run_writes_a_run_folder(tmp_path):
    run_file = write_run(tmp_path / "run.yaml", small_run(
        source_training={"epochs": 1}, target_training={"epochs": 2}))
    out = tmp_path / "out"
    proc = cli("run", str(run_file), "--out", str(out), "--quiet", check=True)
    assert "Task Fine-Tuning" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["route"] == "task_fine_tuning"
    for key in ("metrics", "baseline", "gain"):
        assert key in summary
    assert summary["gain"] == pytest.approx(
        summary["metrics"]["accuracy"] - summary["baseline"]["accuracy"])
    resolved = yaml.safe_load((out / "run.yaml").read_text())
    assert resolved["target_training"]["lr"] == 1e-3  # defaults are filled in
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in records] == [
        ("source", 0), ("target", 0), ("target", 1), ("baseline", 0), ("baseline", 1)]
    for stage in ("source", "target", "baseline"):
        assert (out / "checkpoints" / stage / "best.safetensors").is_file()
