"""Dataset Merging, Weight Sharing and Multi-Task Learning end to end on tiny built-in problems."""

from __future__ import annotations

import pytest
import torch

from tlroutes.config import parse_run
from tlroutes.errors import ConfigError, DataError
from tlroutes.problem import Task
from tlroutes.routes.multi_task_learning import (
    Joined,
    check_labelled,
    delta_m,
    drop_cross_task_overlap,
    matched_epochs,
)
from tlroutes.runner import run

QUICK = {"epochs": 2, "batch_size": 32}


def _run(tmp_path, name="r", **fields):
    spec = {"seed": 1, "model": {"trunk": "mlp"}, "training": QUICK,
            "hardware": {"accelerator": "cpu"}, **fields}
    return run(parse_run(spec), tmp_path / name, progress=False), tmp_path / name


def test_dataset_merging_reports_per_source_and_finds_planted_leaks(tmp_path):
    # Two draws from one pool share samples: the leakage report must find them.
    summary, _ = _run(tmp_path, route="dataset_merging", problems={
        "a": {"dataset": "digits", "n": 200, "seed": 1},
        "b": {"dataset": "digits", "n": 200, "seed": 2}}, recipe={"deduplicate": "drop"})
    assert set(summary.details["per_source"]) == {"pooled", "a", "b"}
    assert set(summary.details["per_source_baseline"]) == {"a", "b"}
    leaks = summary.details["leakage"]
    assert "a.train" in summary.details["leakage_summary"] and leaks
    assert sum(summary.details["mixing"]["probabilities"].values()) == pytest.approx(1.0)


def test_dataset_merging_with_a_label_map(tmp_path):
    label_map = tmp_path / "map.csv"
    rows = ["dataset,label,merged"]
    rows += [f"a,{d},{'even' if d % 2 == 0 else 'odd'}" for d in range(10)]
    rows += [f"b,{d},{'even' if d % 2 == 0 else 'odd'}" for d in range(10)]
    label_map.write_text("\n".join(rows) + "\n")
    summary, _ = _run(tmp_path, route="dataset_merging", problems={
        "a": {"dataset": "digits", "n": 200, "seed": 1},
        "b": {"dataset": "digits", "n": 200, "seed": 3}},
        recipe={"label_map": str(label_map), "mixing": "temperature", "temperature": 2.0})
    assert summary.primary_metric == "accuracy"


def test_dataset_merging_unmapped_label_is_an_error(tmp_path):
    label_map = tmp_path / "map.csv"
    label_map.write_text("dataset,label,merged\n" + "".join(
        f"{ds},{d},x{d}\n" for ds in "ab" for d in range(9)))  # digit 9 unmapped
    with pytest.raises(DataError, match="9"):
        _run(tmp_path, route="dataset_merging", problems={
            "a": {"dataset": "digits", "n": 100}, "b": {"dataset": "digits", "n": 100}},
            recipe={"label_map": str(label_map)})


def test_weight_sharing_across_modalities(tmp_path):
    summary, out = _run(tmp_path, route="weight_sharing", problems={
        "images": {"dataset": "digits", "n": 150},
        "signals": {"dataset": "mnist1d", "n": 200}}, recipe={"domain_norm": True})
    assert set(summary.details["per_domain"]) == {"images", "signals"}
    assert summary.details["pooled_baseline"] is None  # shapes differ: no pooled model


def test_weight_sharing_pooled_baseline_when_shapes_agree(tmp_path):
    summary, _ = _run(tmp_path, route="weight_sharing", problems={
        "upright": {"dataset": "digits", "n": 150},
        "rotated": {"dataset": "digits", "n": 150, "shift": {"rotation": 40}}})
    assert set(summary.details["pooled_baseline"]) == {"upright", "rotated"}
    assert "one model, pooled data" in summary.also


def test_weight_sharing_refuses_different_label_sets(tmp_path):
    with pytest.raises(ConfigError, match="label sets differ"):
        _run(tmp_path, route="weight_sharing", problems={
            "a": {"dataset": "digits", "n": 100},
            "b": {"dataset": "mnist1d", "task": "parity", "n": 100}})


@pytest.mark.parametrize("weighting", ["uw", "dwa", "pcgrad"])
def test_multi_task_learning_with_shared_inputs(tmp_path, weighting):
    problems = {name: {"dataset": "digits", "task": name, "canvas": 12, "n": 200}
                for name in ("digit", "properties", "position")}
    summary, out = _run(tmp_path, route="multi_task_learning", problems=problems,
                        recipe={"weighting": weighting})
    assert set(summary.details["per_task"]) == set(problems)
    expected = delta_m(summary.details["per_task"], summary.details["per_task_baseline"], {
        "digit": Task("classification", tuple("0123456789")),
        "properties": Task("multilabel", ("even", ">4", "prime", "loop")),
        "position": Task("regression", ("row", "col"))})
    assert summary.details["delta_m"] == pytest.approx(expected)
    assert "train_weight_digit" in (out / "metrics.jsonl").read_text()


def test_multi_task_learning_with_separate_inputs_masks_missing_labels(tmp_path):
    summary, _ = _run(tmp_path, route="multi_task_learning", problems={
        "digit": {"dataset": "digits", "n": 150, "seed": 1},
        "parity": {"dataset": "digits", "task": "parity", "n": 150, "seed": 2}},
        recipe={"weighting": "nash_mtl"})
    assert set(summary.details["per_task"]) == {"digit", "parity"}
    # one stream per task's inputs, a batch from each per step: the joint epoch is a pass over
    # the longer one, so the longer task's baseline has the same epochs and the other's no fewer
    epochs = summary.details["baseline_epochs"]
    assert min(epochs.values()) == QUICK["epochs"] <= max(epochs.values()), epochs


def test_joined_targets_round_trip_and_masks():
    tasks = {"c": Task("classification", ("a", "b", "c")), "r": Task("regression", ("u", "v"))}
    joined = Joined(tasks)
    x1, x2 = torch.zeros(3, 4), torch.ones(2, 4)
    split = joined.pack([(x1, {"c": torch.tensor([0, 2, 1])}),
                         (x2, {"r": torch.tensor([[1.0, 2.0], [3.0, 4.0]])})])
    c, cmask = joined.unpack(split.y, "c")
    r, rmask = joined.unpack(split.y, "r")
    assert cmask.tolist() == [True, True, True, False, False]
    assert c[cmask].tolist() == [0, 2, 1] and r[rmask].tolist() == [[1, 2], [3, 4]]


def test_a_task_with_no_labelled_sample_in_a_split_is_named():
    tasks = {"c": Task("classification", ("a", "b")), "r": Task("regression")}
    joined = Joined(tasks)
    labelled = joined.pack([(torch.zeros(2, 3), {"c": torch.tensor([0, 1]),
                                                 "r": torch.ones(2, 1)})])
    only_c = joined.pack([(torch.zeros(2, 3), {"c": torch.tensor([0, 1])})])
    with pytest.raises(DataError, match="Task 'r' has no labelled sample in the val split"):
        check_labelled(joined, {"train": labelled, "val": only_c})


def test_delta_m_signs_lower_is_better_metrics():
    tasks = {"c": Task("classification", ("a", "b")), "r": Task("regression")}
    ref = {"c": {"accuracy": 0.5}, "r": {"mse": 2.0}}
    now = {"c": {"accuracy": 0.6}, "r": {"mse": 1.0}}
    assert delta_m(now, ref, tasks) == pytest.approx(100 * (0.2 + 0.5) / 2)


def test_multi_task_learning_needs_one_domain(tmp_path):
    with pytest.raises(ConfigError, match="parallel_training"):
        _run(tmp_path, route="multi_task_learning", problems={
            "digit": {"dataset": "digits", "n": 100},
            "parity": {"dataset": "mnist1d", "task": "parity", "n": 100}})


def test_a_tasks_held_out_inputs_are_dropped_from_the_other_tasks_training():
    from tlroutes.data import load_builtin

    small = load_builtin("digits", task="digit", n=150, seed=0)
    large = load_builtin("digits", task="properties", n=1500, seed=0)
    held = {r.numpy().tobytes() for r in torch.cat([small.val.x, small.test.x])}
    overlapping = sum(r.numpy().tobytes() in held for r in large.train.x)
    assert overlapping > 0  # the two draws share images: the case this guards against
    before = len(large.train)
    dropped = drop_cross_task_overlap({"digit": small, "properties": large})
    assert dropped["properties"] == overlapping == before - len(large.train)
    assert not any(r.numpy().tobytes() in held for r in large.train.x)
    # the same inputs split the same way (the joined case) drop nothing
    a = load_builtin("digits", task="digit", n=200, seed=0)
    b = load_builtin("digits", task="properties", n=200, seed=0)
    assert drop_cross_task_overlap({"a": a, "b": b}) == {"a": 0, "b": 0}


def test_single_task_baselines_get_the_joint_stages_steps():
    from tlroutes.config import TrainSpec

    train = TrainSpec(epochs=10, batch_size=32)
    assert matched_epochs(320, 320, train) == 10  # shared inputs: same steps, same epochs
    assert matched_epochs(1000, 100, train) == 80  # 10 × 32 steps over 4 steps per epoch
    assert matched_epochs(10, 1000, train) == 1  # never below one epoch
