"""Unlabelled target data: loaded where no label is needed (an unsupervised Domain Adaptation
target, ``inspect``), never scored from its placeholder targets, and refused by name where a
route needs labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli
from tests.make_wine_sites import OUT as WINE
from tlroutes.config import DataSpec, parse_run
from tlroutes.data.load import load_problem
from tlroutes.errors import DataError
from tlroutes.measure.evidence import inspect
from tlroutes.runner import run

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["class_0", "class_1", "class_2"]


def _tables(tmp_path: Path) -> tuple[Path, Path]:
    """Lab A with labels, lab B without its label column (what a new user would hold)."""
    table = pd.read_csv(WINE)
    source = tmp_path / "lab_a.csv"
    target = tmp_path / "lab_b_unlabelled.csv"
    table[table.site == "lab_a"].drop(columns="site").to_csv(source, index=False)
    table[table.site == "lab_b"].drop(columns=["site", "cultivar"]).to_csv(target, index=False)
    return source, target


def _da(source: Path, target: Path, **recipe) -> dict:
    return {
        "route": "domain_adaptation", "seed": 0,
        "source": {"dataset": str(source), "label": "cultivar"},
        "target": {"dataset": str(target), "labels": CLASSES},
        "model": {"trunk": "mlp"},
        "source_training": {"epochs": 4, "batch_size": 16, "lr": 0.003},
        "target_training": {"epochs": 3, "batch_size": 16, "lr": 0.001},
        "recipe": {"method": "coral", "selection": "im", **recipe},
        "hardware": {"accelerator": "cpu", "threads": 1},
    }


def test_a_table_without_label_column_is_unlabelled_only_where_allowed(tmp_path):
    _, target = _tables(tmp_path)
    with pytest.raises(DataError, match=r"set `label:` to the target column.*`labels: \[\.\.\.\]`"):
        load_problem(DataSpec(dataset=str(target)), 0, "target", allow_unlabelled=True)
    spec = DataSpec(dataset=str(target), labels=CLASSES)
    with pytest.raises(DataError, match=r"target: 'lab_b_unlabelled' \(.*no label column\) "
                                        r"holds no labels, but training"):
        load_problem(spec, 0, "target")
    problem = load_problem(spec, 0, "target", allow_unlabelled=True)
    assert problem.unlabelled and problem.task.labels == tuple(CLASSES)
    assert problem.class_counts == {} and problem.present_labels() == tuple(CLASSES)
    assert int(problem.train.y.max()) == -1


def test_unsupervised_domain_adaptation_on_an_unlabelled_table(tmp_path):
    source, target = _tables(tmp_path)
    summary = run(parse_run(_da(source, target)), tmp_path / "run", progress=False).to_dict()
    assert summary["metrics"] == {} and summary["baseline"] is None and summary["gain"] is None
    assert "no target metrics" in summary["metric_note"]
    assert summary["target_unlabelled"] is True and summary["variant"] == "closed"
    # the adapt stage selected label-free and logged no target accuracy from placeholders
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    adapt = [r for r in logged if r.get("stage") == "adapt" and "val_target_im" in r]
    assert adapt and not any("val_target_accuracy" in r for r in adapt)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Target metrics unavailable: no target metrics" in report


@pytest.mark.parametrize(("recipe", "named"), [
    ({"target_labels": 0.2}, "recipe.target_labels 0.2"),
    ({"selection": "target_accuracy"}, "selection target_accuracy"),
])
def test_what_reads_target_labels_is_refused_by_name(tmp_path, recipe, named):
    source, target = _tables(tmp_path)
    with pytest.raises(DataError, match=rf"holds no labels, but Domain Adaptation.*{named}"):
        run(parse_run(_da(source, target, **recipe)), tmp_path / "run", progress=False)


def test_a_route_that_needs_labels_names_itself(tmp_path):
    source, target = _tables(tmp_path)
    spec = _da(source, target)
    spec.update(route="task_fine_tuning", recipe={})
    with pytest.raises(DataError, match="holds no labels, but the Task Fine-Tuning route"):
        run(parse_run(spec), tmp_path / "run", progress=False)


def test_partial_variant_on_an_unlabelled_target_declaring_fewer_classes(tmp_path):
    source, target = _tables(tmp_path)
    spec = _da(source, target)
    spec["target"]["labels"] = CLASSES[:2]
    summary = run(parse_run(spec), tmp_path / "run", progress=False).to_dict()
    assert summary["variant"] == "partial" and summary["metrics"] == {}
    assert set(summary["class_weights"]) == set(CLASSES)


def test_inspect_measures_an_unlabelled_target_without_its_labels(tmp_path):
    source, target = _tables(tmp_path)
    evidence = inspect({"dataset": str(source), "label": "cultivar"},
                       {"dataset": str(target), "labels": CLASSES}, seeds=1, permutations=50)
    pair = evidence.pairs[0]
    assert pair.domain.matching == "unlabelled" and pair.domain.label_shift is None
    assert pair.task.label_relation == "identical"
    assert pair.task.labels.unlabelled == ("target",)
    assert "target holds no labels" in pair.task.label_reason
    assert evidence.problems["lab_b_unlabelled"]["class_counts"] == {}


def test_an_image_folder_without_class_folders(tmp_path):
    from PIL import Image

    folder = tmp_path / "loose"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(DataError, match=r"holds 12 image\(s\) directly and no class subfolders"):
        load_problem(DataSpec(dataset=str(folder)), 0, "target", allow_unlabelled=True)
    problem = load_problem(DataSpec(dataset=str(folder), labels=["a", "b"]), 0, "target",
                           allow_unlabelled=True)
    assert problem.unlabelled and len(problem.train) + len(problem.val) + len(problem.test) == 12
    with pytest.raises(DataError, match="images without class folders"):
        load_problem(DataSpec(dataset=str(folder), labels=["a", "b"]), 0, "target")


def test_inspect_cli_on_an_unlabelled_npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", x=rng.normal(size=(120, 4)).astype("float32"),
             y=np.arange(120) % 2)
    np.savez(tmp_path / "t.npz", x=rng.normal(1, 1, size=(90, 4)).astype("float32"),
             labels=np.array(["0", "1"]))
    out = tmp_path / "e.json"
    cli("inspect", str(tmp_path / "s.npz"), str(tmp_path / "t.npz"), "--json",
        str(out), "--seeds", "1", "--permutations", "50", check=True)
    evidence = json.loads(out.read_text())
    assert evidence["pairs"][0]["domain"]["matching"] == "unlabelled"
