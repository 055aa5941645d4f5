"""The MLflow tracker logs the trained model as a pyfunc that MLflow loads back and that
predicts what ``tlroutes.load`` predicts (a local SQLite store, no server)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tlroutes
from tests.conftest import small_run
from tlroutes.config import parse_run
from tlroutes.runner import run

pytest.importorskip("mlflow")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_logged_model_loads_back_and_predicts_the_same(tmp_path, monkeypatch):
    import mlflow.pyfunc

    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    spec = small_run(source_training={"epochs": 1}, target_training={"epochs": 1})
    spec["tracking"] = {"mlflow": {"tracking_uri": uri, "experiment": "models",
                                   "artifact_location": str(store / "artifacts")}}
    out = tmp_path / "run"
    run(parse_run(spec), out, progress=False)
    run_id = json.loads((out / "tracking.json").read_text())["mlflow"]["run_id"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    predictor = tlroutes.load(out)
    x = predictor.split("test").x.numpy()
    expected = predictor.predict_frame(x)
    got = model.predict(x)
    assert list(got["label"]) == list(expected["label"])
    np.testing.assert_array_equal(got.filter(like="p_").to_numpy(),
                                  expected.filter(like="p_").to_numpy())
