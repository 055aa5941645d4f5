"""Precision: "64-true" trains a whole route in float64 (weights, held data and evaluation)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import tlroutes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_route_trains_and_saves_in_float64(tmp_path):
    spec = {
        "route": "task_fine_tuning",
        "source": {"dataset": "digits", "n": 200, "classes": [0, 1, 2, 3, 4]},
        "target": {"dataset": "digits", "n": 150, "classes": [5, 6, 7, 8, 9]},
        "model": {"trunk": "mlp", "trunk_args": {"width": 16}},
        "source_training": {"epochs": 1}, "target_training": {"epochs": 1},
        "hardware": {"precision": "64-true", "threads": 1},
    }
    summary = tlroutes.run(spec, tmp_path / "run", progress=False)
    weights = load_file(tmp_path / "run" / "model.safetensors")
    # The float32 data were cast to the weights' dtype; before, the first batch failed with
    # "Input type (float) and bias type (double) should be the same".
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float64}
    assert 0.0 <= summary.metrics["accuracy"] <= 1.0
