"""Use what a run trained: the manifest, ``tlroutes.load``, ``predict`` and ``tlroutes predict``.

Known answer for every route that saves a model: predicting the run's own test split through the
loaded model gives exactly the test metrics ``summary.json`` reports. The tolerance is zero: the
rebuilt model holds the saved float32 weights bit for bit, and the split, the forward pass
(``evaluate_split``) and the metric (``task_metrics``) are the same code on the same CPU; only
the batch size could differ, and in eval mode each sample's output does not depend on its batch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tlroutes
from tests.conftest import small_run
from tlroutes.cli import main
from tlroutes.config import parse_run
from tlroutes.errors import ConfigError, DataError
from tlroutes.manifest import MANIFEST_FILE
from tlroutes.manifest.weights import read_metadata
from tlroutes.objectives.tasks import task_metrics
from tlroutes.runner import run

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS = {"dataset": "digits", "n": 200}
QUICK = {"epochs": 1, "batch_size": 32}
CPU = {"accelerator": "cpu"}


def _sequential(route, **fields):
    return {"route": route, "seed": 1, "source": DIGITS, "target": DIGITS,
            "model": {"trunk": "mlp"}, "source_training": QUICK, "target_training": QUICK,
            "hardware": CPU, **fields}


def _simultaneous(route, **fields):
    return {"route": route, "seed": 1, "model": {"trunk": "mlp"}, "training": QUICK,
            "hardware": CPU, **fields}


def _test_metrics(predictor, head=None):
    part = predictor.split("test", head)
    name = predictor._head(head)
    return task_metrics(predictor.tasks[name], predictor.outputs(part, name), part.y)


# (run file, where summary.json keeps the test metrics of the loaded model's head)
ROUTES = {
    "task_fine_tuning": (_sequential("task_fine_tuning",
                                     target={**DIGITS, "classes": [5, 6, 7, 8, 9]}),
                         lambda s: s["metrics"]),
    "task_fine_tuning_lora": (_sequential("task_fine_tuning", recipe={"lora_rank": 2}),
                              lambda s: s["metrics"]),
    "domain_adaptation": (_sequential("domain_adaptation",
                                      target={**DIGITS, "shift": {"rotation": 30}}),
                          lambda s: s["metrics"]),
    "task_adaptation_multilabel": (_sequential("task_adaptation",
                                               target={**DIGITS, "task": "properties"}),
                                   lambda s: s["metrics"]),
    "task_adaptation_regression": (_sequential(
        "task_adaptation", source={**DIGITS, "canvas": 16},
        target={**DIGITS, "task": "position", "canvas": 16, "n": 120},
        recipe={"cache_features": False, "finetune_epochs": 1}), lambda s: s["metrics"]),
    "modality_transfer": (_sequential(
        "modality_transfer", target={"dataset": "mnist1d", "task": "properties", "n": 150},
        model={"trunk": "transformer", "trunk_args": {"dim": 16, "depth": 1, "heads": 2}}),
        lambda s: s["metrics"]),
    "dataset_merging": (_simultaneous("dataset_merging", problems={
        "a": {"dataset": "digits", "n": 200, "seed": 1},
        "b": {"dataset": "digits", "n": 200, "seed": 2}}),
        lambda s: s["per_source"]["b"]),
    "weight_sharing": (_simultaneous("weight_sharing", problems={
        "upright": {"dataset": "digits", "n": 150},
        "rotated": {"dataset": "digits", "n": 150, "shift": {"rotation": 40}}}),
        # one head, a stem per domain: the manifest's head reads the first domain's data
        lambda s: s["per_domain"]["upright"]),
}


@pytest.mark.parametrize("case", list(ROUTES))
def test_predicting_the_test_split_gives_the_summarys_metrics(tmp_path, case):
    spec, reported = ROUTES[case]
    out = tmp_path / "run"
    run(parse_run(spec), out, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    predictor = tlroutes.load(out)
    assert _test_metrics(predictor) == reported(summary)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["route"] == spec["route"] and manifest["torch_version"] == torch.__version__
    assert manifest["model"]["trunk"]["factory"] == spec["model"]["trunk"]
    short = json.loads(read_metadata(out / "model.safetensors")["tlroutes.manifest"])
    assert short["heads"] == {k: {"kind": h["task"]["kind"], "labels": h["task"]["labels"]}
                              for k, h in manifest["heads"].items()}
    if case == "task_fine_tuning_lora":
        assert manifest["model"]["lora"]["r"] == 2 and manifest["model"]["lora"]["targets"]


def test_parallel_training_predicts_per_job(tmp_path):
    jobs = {"digits": {"data": DIGITS, "model": {"trunk": "mlp"}, "training": QUICK},
            "signals": {"data": {"dataset": "mnist1d", "n": 200}, "model": {"trunk": "mlp"},
                        "training": QUICK}}
    spec = parse_run({"route": "parallel_training", "seed": 1, "hardware": CPU,
                      "recipe": {"jobs": jobs, "backend": "interleaved"}})
    summary = run(spec, tmp_path / "run", progress=False).to_dict()
    for name in jobs:
        predictor = tlroutes.load(tmp_path / "run", job=name)
        assert _test_metrics(predictor) == summary["jobs"][name]["metrics"]
    with pytest.raises(ConfigError, match="one model per job .*digits, signals"):
        tlroutes.load(tmp_path / "run")
    with pytest.raises(ConfigError, match="Unknown job 'digit'.*'digits'"):
        tlroutes.load(tmp_path / "run", job="digit")


def test_fused_parallel_training_predicts_per_job(tmp_path):
    """Jobs of one shape trained as one fused stage get a manifest each, as jobs trained on
    their own do, and predict their summary's test metrics."""
    jobs = {name: {"data": {**DIGITS, "seed": seed}, "model": {"trunk": "mlp"},
                   "training": QUICK} for name, seed in (("a", 1), ("b", 2))}
    spec = parse_run({"route": "parallel_training", "seed": 1, "hardware": CPU,
                      "recipe": {"jobs": jobs, "backend": "fused"}})
    summary = run(spec, tmp_path / "run", progress=False).to_dict()
    assert summary["backend"] == "fused"
    for name in jobs:
        predictor = tlroutes.load(tmp_path / "run", job=name)
        assert _test_metrics(predictor) == summary["jobs"][name]["metrics"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Task Fine-Tuning run on digits 5-9 (its folder)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run(parse_run(small_run()), out, progress=False)
    return out


def test_predict_and_predict_proba(trained):
    predictor = tlroutes.load(trained)
    test = predictor.split("test")
    labels = predictor.predict(test)
    proba = predictor.predict_proba(test.x)
    assert set(labels) <= {"5", "6", "7", "8", "9"} and proba.shape == (len(test), 5)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    # the label is the most probable class; numpy input gives the same as the tensor
    assert list(labels) == [predictor.tasks["target"].labels[k] for k in proba.argmax(1)]
    assert list(predictor.predict(test.x.numpy())) == list(labels)
    # a single sample is a batch of one; a dataset of (x, y) pairs is read lazily
    assert predictor.predict(test.x[0]).tolist() == [labels[0]]
    pairs = torch.utils.data.TensorDataset(test.x, test.y)
    assert list(predictor.predict(pairs, batch_size=7)) == list(labels)


def test_predict_npz_and_the_cli(trained, tmp_path, capsys):
    predictor = tlroutes.load(trained)
    test = predictor.split("test")
    np.savez(tmp_path / "new.npz", x=test.x.numpy())
    out = tmp_path / "pred.csv"
    main(["predict", str(trained), str(tmp_path / "new.npz"), "--out", str(out)])
    import pandas as pd

    frame = pd.read_csv(out, dtype={"label": str})
    assert list(frame.columns) == ["id", "label", "p_5", "p_6", "p_7", "p_8", "p_9"]
    assert list(frame["label"]) == list(predictor.predict(test))
    # --split test prints the test metrics, the same as summary.json's
    main(["predict", str(trained), "--split", "test", "--out", str(out)])
    accuracy = json.loads((trained / "summary.json").read_text())["metrics"]["accuracy"]
    assert f"accuracy {accuracy:.4f}" in capsys.readouterr().out


def test_prediction_data_that_does_not_fit_names_the_expected_shape(trained):
    predictor = tlroutes.load(trained)
    with pytest.raises(DataError, match=r"shape \(1, 8, 8\)"):
        predictor.predict(np.zeros((3, 1, 9, 9), dtype=np.float32))
    with pytest.raises(DataError, match="not trained on a table"):
        predictor.predict(__import__("pandas").DataFrame({"a": [1.0]}))


def test_unknown_head_and_split_are_named(trained):
    predictor = tlroutes.load(trained)
    with pytest.raises(ConfigError, match="Unknown head 'targt'.*'target'"):
        predictor.predict(predictor.split("test"), head="targt")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(trained), "--split", "test", "--head", "nope"])
    assert exit_.value.code == 2


def test_a_run_without_manifest_says_how_to_rebuild_it(tmp_path):
    out = tmp_path / "run"
    run(parse_run(small_run(target_training={"epochs": 1})), out, progress=False)
    before = tlroutes.load(out).predict_proba(tlroutes.load(out).split("test"))
    (out / MANIFEST_FILE).unlink()  # as a run from before manifests left it
    with pytest.raises(ConfigError, match=f"tlroutes manifest {out}"):
        tlroutes.load(out)
    main(["manifest", str(out)])  # resumes from the finished checkpoints: nothing retrains
    predictor = tlroutes.load(out)
    np.testing.assert_array_equal(predictor.predict_proba(predictor.split("test")), before)


TABLE_ROWS = 240


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """Domain Adaptation between two sites of one CSV (features f0-f3, label, site)."""
    folder = tmp_path_factory.mktemp("table")
    g = np.random.default_rng(0)
    x = g.normal(size=(TABLE_ROWS, 4))
    site = np.where(np.arange(TABLE_ROWS) % 2 == 0, "a", "b")
    x[site == "b"] += 0.5
    label = np.where(x[:, 0] + x[:, 1] > 0.5 * (site == "b"), "high", "low")
    import pandas as pd

    frame = pd.DataFrame({f"f{i}": x[:, i] for i in range(4)} | {"label": label, "site": site})
    frame.to_csv(folder / "sites.csv", index=False)
    block = {"dataset": str(folder / "sites.csv"), "domain_column": "site"}
    spec = _sequential("domain_adaptation", source={**block, "domain_value": "a"},
                       target={**block, "domain_value": "b"})
    run(parse_run(spec), folder / "run", progress=False)
    return folder, frame


def test_a_table_run_predicts_a_dataframe_and_a_csv_by_column_name(table_run):
    folder, frame = table_run
    predictor = tlroutes.load(folder / "run")
    manifest_pre = predictor.manifest["heads"]["task"]["preprocessing"]
    assert manifest_pre["features"] == ["f0", "f1", "f2", "f3"]
    shuffled = frame[["site", "f3", "f1", "label", "f0", "f2"]]  # order and extras do not matter
    expected = predictor.predict(torch.tensor(frame[["f0", "f1", "f2", "f3"]].to_numpy(),
                                              dtype=torch.float32))
    assert list(predictor.predict(shuffled)) == list(expected)
    assert list(predictor.predict(folder / "sites.csv")) == list(expected)
    assert _test_metrics(predictor) == json.loads(
        (folder / "run" / "summary.json").read_text())["metrics"]


def test_a_dataframe_without_the_models_columns_names_them(table_run):
    folder, frame = table_run
    predictor = tlroutes.load(folder / "run")
    with pytest.raises(DataError, match="lacks the column.*f2.*Expected columns: f0, f1, f2, f3"):
        predictor.predict(frame.drop(columns=["f2"]))


def test_multi_task_learning_predicts_per_head(tmp_path):
    problems = {name: {"dataset": "digits", "task": name, "canvas": 12, "n": 200}
                for name in ("digit", "properties", "position")}
    out = tmp_path / "run"
    summary = run(parse_run(_simultaneous("multi_task_learning", problems=problems)), out,
                  progress=False).to_dict()
    predictor = tlroutes.load(out)
    for head in problems:
        assert _test_metrics(predictor, head) == summary["per_task"][head]
    x = predictor.split("test", "digit").x
    every = predictor.predict(x)  # no head named: a dict of all of them
    assert {k: v.shape for k, v in every.items()} == {
        "digit": (len(x),), "properties": (len(x), 4), "position": (len(x), 2)}
    assert list(every["digit"]) == list(predictor.predict(x, head="digit"))
    with pytest.raises(ConfigError, match="regression: it predicts values"):
        predictor.predict_proba(x, head="position")
