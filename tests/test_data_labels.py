"""Class labels, task kinds, automatic splits and their persistence (data/sources/labels.py and
data/sources/splitting.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tlroutes.data.sources.labels import encode_labels, infer_task_kind, select_classes
from tlroutes.data.sources.splitting import (
    assemble,
    make_splits,
    run_folder,
    splits_for,
    subsample,
)
from tlroutes.errors import DataError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Domain, Task

# -- encode_labels ---------------------------------------------------------------------------


def test_string_labels_sorted_names():
    ids, names = encode_labels(["dog", "cat", "dog", "bird"], where="t")
    assert names == ("bird", "cat", "dog")
    assert ids.tolist() == [2, 1, 2, 0]
    assert ids.dtype == np.int64


def test_integer_labels_sorted_numerically():
    ids, names = encode_labels(np.array([10, 2, 2, 30]), where="t")
    assert names == ("2", "10", "30")  # numeric order, not "10" < "2"
    assert ids.tolist() == [1, 0, 0, 2]


def test_series_and_whole_floats_and_bools():
    ids, names = encode_labels(pd.Series(["b", "a"]), where="t")
    assert (ids.tolist(), names) == ([1, 0], ("a", "b"))
    ids, names = encode_labels(np.array([1.0, 0.0, 1.0]), where="t")
    assert (ids.tolist(), names) == ([1, 0, 1], ("0", "1"))
    ids, names = encode_labels([True, False], where="t")
    assert (ids.tolist(), names) == ([1, 0], ("False", "True"))


def test_declared_names_strings_and_ids():
    ids, names = encode_labels(["dog", "cat"], names=["cat", "dog", "fox"], where="t")
    assert (ids.tolist(), names) == ([1, 0], ("cat", "dog", "fox"))
    ids, names = encode_labels(np.array([2, 0]), names=["cat", "dog", "fox"], where="t")
    assert (ids.tolist(), names) == ([2, 0], ("cat", "dog", "fox"))


def test_values_outside_declared_names_named():
    with pytest.raises(DataError, match=r"file.csv.*'cta'.*row\(s\) 1"):
        encode_labels(["cat", "cta", "dog"], names=["cat", "dog"], where="file.csv, column y")
    with pytest.raises(DataError, match=r"names 2 classes \(0: cat, 1: dog\) but the data hold "
                                        r"class index 5"):
        encode_labels(np.array([0, 5]), names=["cat", "dog"], where="t")


def test_missing_labels_counted_with_rows():
    with pytest.raises(DataError, match=r"2 label\(s\) are missing.*row\(s\) 1, 3"):
        encode_labels(["a", None, "b", float("nan")], where="t")
    with pytest.raises(DataError, match=r"1 label\(s\) are missing.*row\(s\) 0"):
        encode_labels(np.array([np.nan, 1.0]), where="t")
    with pytest.raises(DataError, match="missing"):
        encode_labels(pd.Series(["a", pd.NA], dtype="string"), where="t")


def test_mixed_types_refused():
    with pytest.raises(DataError, match=r"mix types.*int at row 0.*str at row 1"):
        encode_labels([1, "cat", 2], where="t")


def test_fractional_float_labels_refused():
    with pytest.raises(DataError, match="not whole numbers.*task: regression"):
        encode_labels(np.array([0.5, 1.0]), where="t")


def test_repeated_declared_names_refused():
    with pytest.raises(DataError, match=r"repeats names \('a' at positions 0, 2\)"):
        encode_labels(["a"], names=["a", "b", "a"], where="t")


# -- infer_task_kind ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", [np.array([0, 1, 2]), ["a", "b"], np.array([True, False])])
def test_labels_are_classification(values):
    assert infer_task_kind(values, declared=None, where="t") == "classification"


def test_real_target_needs_declared_regression():
    with pytest.raises(DataError, match="task: regression"):
        infer_task_kind(np.array([0.3, 1.7]), declared=None, where="t")
    assert infer_task_kind(np.array([0.3, 1.7]), declared="regression", where="t") == "regression"


def test_whole_floats_ambiguous():
    with pytest.raises(DataError, match="could be class ids or real values"):
        infer_task_kind(np.array([0.0, 1.0, 2.0]), declared=None, where="t")


def test_strings_cannot_be_regression_and_wide_targets_need_kind():
    with pytest.raises(DataError, match="strings"):
        infer_task_kind(["a", "b"], declared="regression", where="t")
    with pytest.raises(DataError, match="multilabel"):
        infer_task_kind(np.zeros((4, 3)), declared=None, where="t")
    with pytest.raises(DataError, match="unknown"):
        infer_task_kind([1], declared="clasification", where="t")


# -- select_classes ----------------------------------------------------------------------------


def test_select_classes_by_name_and_id():
    ids = np.array([0, 1, 2, 1, 0])
    mask, new, names = select_classes(ids, ("a", "b", "c"), ["c", "a"], where="t")
    assert mask.tolist() == [True, False, True, False, True]
    assert new.tolist() == [1, 0, 1] and names == ("c", "a")
    _, new, names = select_classes(ids, ("a", "b", "c"), [1, 2], where="t")
    assert names == ("b", "c") and new.tolist() == [0, 1, 0]


def test_select_classes_unknown_suggests():
    with pytest.raises(DataError, match="Did you mean 'bird'"):
        select_classes(np.array([0, 1]), ("bird", "cat"), ["brid", "cat"], where="t")
    with pytest.raises(DataError, match="at least two"):
        select_classes(np.array([0, 1]), ("bird", "cat"), ["cat"], where="t")


# -- make_splits -------------------------------------------------------------------------------


def _check_partition(splits, n):
    every = np.concatenate([splits[s] for s in ("train", "val", "test")])
    assert sorted(every.tolist()) == list(range(n))


def test_splits_seeded_disjoint_and_sized():
    a = make_splits(100, y=None, seed=3)
    b = make_splits(100, y=None, seed=3)
    c = make_splits(100, y=None, seed=4)
    _check_partition(a, 100)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.array_equal(a["train"], c["train"])
    assert [len(a[s]) for s in ("train", "val", "test")] == [60, 20, 20]


def test_stratified_every_class_of_three_in_every_split():
    # 90 of class 0, 7 of class 1, 3 of class 2: a plain 60/20/20 cut can miss the rare class
    y = np.array([0] * 90 + [1] * 7 + [2] * 3)
    for seed in range(20):
        splits = make_splits(100, y=y, seed=seed)
        _check_partition(splits, 100)
        for name, idx in splits.items():
            assert set(y[idx].tolist()) == {0, 1, 2}, (seed, name)


def test_stratified_proportions():
    y = np.repeat(np.arange(4), 50)
    splits = make_splits(200, y=y, fractions=(0.5, 0.25, 0.25), seed=0)
    for cls in range(4):
        counts = [int((y[splits[s]] == cls).sum()) for s in ("train", "val", "test")]
        assert counts in ([25, 12, 13], [25, 13, 12])


def test_tiny_classes_never_leave_a_split_empty():
    splits = make_splits(3, y=np.array([0, 1, 2]), seed=0)
    assert all(len(v) == 1 for v in splits.values())


def test_too_few_samples():
    with pytest.raises(DataError, match="at least 3 samples"):
        make_splits(2, y=None, seed=0)


def test_subsample_stratified_and_bounded():
    y = np.repeat([0, 1], [80, 20])
    keep = subsample(100, 50, y=y, seed=1, where="t")
    assert len(keep) == 50 and int((y[keep] == 1).sum()) == 10
    with pytest.raises(DataError, match="only 100 samples"):
        subsample(100, 101, y=None, seed=1, where="t")


# -- persistence -------------------------------------------------------------------------------


def test_splits_kept_in_run_folder_and_reused(tmp_path):
    source = {"path": "x.csv", "size": 10, "mtime_ns": 1}
    with run_folder(tmp_path):
        first = splits_for("target x.csv", source=source, n=30, y=None, fractions=(0.6, 0.2, 0.2),
                           seed=0)
    kept = tmp_path / "data" / "target-x.csv.splits.json"
    data = json.loads(kept.read_text())
    assert data["source"] == source and data["train"] == first["train"].tolist()
    # a resume with another seed would otherwise draw other lists: the kept ones win only when
    # the settings agree, so change the file itself to prove they are read back
    data["train"], data["val"] = data["val"], data["train"]
    kept.write_text(json.dumps(data))
    again = splits_for("target x.csv", source=source, n=30, y=None, fractions=(0.6, 0.2, 0.2),
                       seed=0, folder=tmp_path)
    assert np.array_equal(again["train"], first["val"])


def test_changed_source_refused(tmp_path):
    source = {"path": "x.csv", "size": 10, "mtime_ns": 1}
    splits_for("k", source=source, n=30, y=None, fractions=(0.6, 0.2, 0.2), seed=0,
               folder=tmp_path)
    with pytest.raises(DataError, match="data changed.*size"):
        splits_for("k", source={**source, "size": 11}, n=30, y=None, fractions=(0.6, 0.2, 0.2),
                   seed=0, folder=tmp_path)
    with pytest.raises(DataError, match="other split settings.*seed"):
        splits_for("k", source=source, n=30, y=None, fractions=(0.6, 0.2, 0.2), seed=1,
                   folder=tmp_path)


def test_damaged_splits_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "k.splits.json").write_text("{not json")
    with pytest.raises(DataError, match="damaged"):
        splits_for("k", source={}, n=30, y=None, fractions=(0.6, 0.2, 0.2), seed=0,
                   folder=tmp_path)


def test_no_folder_no_file(tmp_path):
    splits_for("k", source={}, n=30, y=None, fractions=(0.6, 0.2, 0.2), seed=0)
    assert not (tmp_path / "data").exists()


# -- assemble ----------------------------------------------------------------------------------


class _Rows:
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def read(self, i):
        return self.x[i]


def test_assemble_tensor_and_lazy_agree():
    x = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    y = torch.tensor([0, 1] * 5)
    splits = make_splits(10, y=y.numpy(), seed=0)
    task, domain = Task("classification", ("a", "b")), Domain("d", "tabular", (4,))
    eager = assemble("p", task, domain, x, y, splits, {"file": "f"})
    lazy = assemble("p", task, domain, LazyInputs(_Rows(x), sample_shape=(4,)), y, splits)
    assert eager.meta["sizes"] == {"train": 6, "val": 2, "test": 2}
    assert lazy.train.is_lazy
    for s in ("train", "val", "test"):
        assert torch.equal(eager.splits()[s].x, lazy.splits()[s].x.materialize())
        assert torch.equal(eager.splits()[s].y, lazy.splits()[s].y)


def test_assemble_validates():
    x = torch.zeros(10, 4)
    x[3, 1] = float("nan")
    splits = {"train": np.arange(6), "val": np.arange(6, 8), "test": np.arange(8, 10)}
    with pytest.raises(DataError, match="NaN"):
        assemble("p", Task("classification", ("a", "b")), Domain("d", "tabular", (4,)), x,
                 torch.zeros(10, dtype=torch.long), splits)
