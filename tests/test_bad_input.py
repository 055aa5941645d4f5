"""Bad input gets one clear message naming the field or file and what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import cli, small_run, write_run
from tlroutes.config import DataSpec, parse_run
from tlroutes.data.load import load_problem
from tlroutes.errors import ConfigError, DataError, MissingExtraError, require_extra
from tlroutes.matrix import Route, route_for
from tlroutes.model import build_model
from tlroutes.problem import Domain, Task


def test_unknown_route_suggests_the_near_miss():
    with pytest.raises(ConfigError, match="Did you mean 'task_adaptation'"):
        Route.parse("task_adaptaton")


def test_unknown_axis_value_names_the_axis():
    with pytest.raises(ConfigError, match="order"):
        route_for(task="same", domain="same", order="sometimes")


def test_unknown_key_suggests_the_near_miss():
    run = small_run()
    run["source_trainig"] = run.pop("source_training")
    with pytest.raises(ConfigError) as err:
        parse_run(run, source="run.yaml")
    message = str(err.value)
    assert "source_trainig" in message and "Did you mean 'source_training'" in message


def test_nested_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"target_training.epoch'.*Did you mean 'epochs'"):
        parse_run(small_run(target_training={"epoch": 3}))


def test_mistyped_value_names_the_field():
    with pytest.raises(ConfigError, match=r"'source_training.epochs'.*integer.*'ten'"):
        parse_run(small_run(source_training={"epochs": "ten"}))


def test_missing_route_is_named():
    run = small_run()
    del run["route"]
    with pytest.raises(ConfigError, match="'route' is required"):
        parse_run(run)


def test_cli_prints_one_message_and_no_traceback(tmp_path):
    run = small_run()
    run["modle"] = run.pop("model")
    proc = cli("run", str(write_run(tmp_path / "bad.yaml", run)), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "Did you mean 'model'" in proc.stderr and "Traceback" not in proc.stderr
    missing = cli("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_route_that_does_not_fit_names_the_route_that_does(tmp_path):
    run = small_run(target={"dataset": "digits", "task": "position", "n": 120, "classes": None})
    with pytest.raises(ConfigError, match="Modality Transfer"):
        from tlroutes.runner import run as run_

        run_(parse_run(run), tmp_path / "o", progress=False)


def test_data_that_does_not_fit_the_stem():
    model = build_model(Domain("digits", "image", (1, 8, 8)), Task("classification", "ab"),
                        trunk="mlp")
    with pytest.raises(DataError, match=r"\(B, 1, 8, 8\)"):
        model(torch.zeros(4, 1, 40))


def _npz(path, **changes):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 8), ("test", 8)):
        arrays[f"x_{split}"] = rng.normal(size=(n, 5)).astype("float32")
        arrays[f"y_{split}"] = rng.integers(0, 3, size=n)
    arrays["labels"] = np.array(["a", "b", "c"])
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def load_npz(path):
    """An ``.npz`` archive as a run file's ``dataset:`` loads it."""
    return load_problem(DataSpec(dataset=str(path)), 0, "data")


def test_good_npz_loads(tmp_path):
    problem = load_npz(_npz(tmp_path / "d.npz"))
    assert problem.domain.modality == "tabular" and problem.task.labels == ("a", "b", "c")


def test_labels_outside_the_declared_set(tmp_path):
    path = _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 7, 0, 1, 2, 0]))
    with pytest.raises(DataError, match=r"d.npz: `labels` names 3 classes \(0: a, 1: b, 2: c\) "
                                        r"but the data hold class index 7 .*7: 1 in test.*"
                                        r"needs 8 names"):
        load_npz(path)


def test_nan_inputs_are_refused(tmp_path):
    x = np.zeros((8, 5), dtype="float32")
    x[3, 1] = np.nan
    with pytest.raises(DataError, match="val split: 1 sample"):
        load_npz(_npz(tmp_path / "d.npz", x_val=x))


def test_empty_split_is_refused(tmp_path):
    path = _npz(tmp_path / "d.npz", x_val=np.zeros((0, 5), "float32"), y_val=np.zeros(0, int))
    with pytest.raises(DataError, match="val split is empty"):
        load_npz(path)


def test_inconsistent_sample_shapes(tmp_path):
    with pytest.raises(DataError, match=r"splits' samples differ in shape \(\[\(5,\), \(6,\)\]\)"):
        load_npz(_npz(tmp_path / "d.npz", x_test=np.zeros((8, 6), "float32")))


def test_missing_arrays_are_named(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((3, 2)))
    with pytest.raises(DataError, match="has x_train but lacks x_val, x_test"):
        load_npz(tmp_path / "d.npz")


def test_missing_optional_extra_says_which_to_install():
    with pytest.raises(MissingExtraError, match=r"pip install 'tlroutes\[tracking\]'"):
        require_extra("surely_not_installed_module", "tracking", "MLflow tracking")
