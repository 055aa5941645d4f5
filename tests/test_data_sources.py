"""Bring your own data: the same table given as CSV, TSV, Parquet, .npz, a datasets folder, a
DataFrame, arrays and a torch Dataset is the same problem and trains the same weights; each bad
input is one clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_wine

from tlroutes.config import DataSpec
from tlroutes.data import from_arrays, from_dataframe, from_dataset
from tlroutes.data.load import load_problem
from tlroutes.data.sources.splitting import run_folder
from tlroutes.errors import ConfigError, DataError

SEED = 7


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    """scikit-learn's wine data: 178 rows, 13 numeric features, string class names."""
    data = load_wine(as_frame=True)
    frame = data.frame.rename(columns={"target": "label"})
    frame["label"] = np.asarray(data.target_names)[frame["label"].to_numpy()]
    return frame


@pytest.fixture(scope="module")
def files(wine, tmp_path_factory) -> dict[str, str]:
    import datasets

    folder = tmp_path_factory.mktemp("wine")
    x = wine.drop(columns="label").to_numpy()
    out = {"csv": folder / "wine.csv", "tsv": folder / "wine.tsv",
           "parquet": folder / "wine.parquet", "npz": folder / "wine.npz",
           "datasets": folder / "wine_ds"}
    wine.to_csv(out["csv"], index=False)
    wine.to_csv(out["tsv"], index=False, sep="\t")
    wine.to_parquet(out["parquet"])
    np.savez(out["npz"], x=x, y=wine["label"].to_numpy().astype(str))
    datasets.Dataset.from_pandas(wine).save_to_disk(str(out["datasets"]))
    return {k: str(v) for k, v in out.items()}


class WineDataset(torch.utils.data.Dataset):
    def __init__(self, frame):
        self.x = frame.drop(columns="label").to_numpy(dtype=np.float32)
        self.y = frame["label"].tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.tensor(self.x[i]), self.y[i]


def _tensor(x):
    return x.materialize() if hasattr(x, "materialize") else x


def _same(a, b):
    assert a.task.labels == b.task.labels and a.task.kind == b.task.kind
    assert a.domain.input_shape == b.domain.input_shape
    for (name, s), t in zip(a.splits().items(), b.splits().values(), strict=True):
        assert torch.equal(_tensor(s.x), _tensor(t.x)), name
        assert torch.equal(s.y, t.y), name


def test_every_source_is_the_same_problem(wine, files):
    spec = {"n": 150, "split": (0.5, 0.25, 0.25)}
    reference = load_problem(DataSpec(dataset=files["csv"], **spec), SEED, "source")
    assert reference.task.labels == ("class_0", "class_1", "class_2")
    assert reference.meta["sizes"] == {"train": 75, "val": 38, "test": 37}
    for kind in ("tsv", "parquet", "npz", "datasets"):
        _same(reference, load_problem(DataSpec(dataset=files[kind], **spec), SEED, "source"))
    x = wine.drop(columns="label").to_numpy()
    options = {"n": 150, "split": (0.5, 0.25, 0.25), "seed": SEED}
    _same(reference, from_dataframe(wine, label="label", **options))
    _same(reference, from_arrays(x, wine["label"].to_numpy(), **options))
    lazy = from_dataset(WineDataset(wine), **options)
    assert lazy.train.is_lazy
    _same(reference, lazy)


def test_every_source_trains_the_same_weights(wine, files):
    from tlroutes.model import build_model

    def train(problem):
        torch.manual_seed(0)
        model = build_model({"input": problem.domain}, {"task": problem.task}, "mlp", {}, "auto",
                            {})
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = _tensor(problem.train.x), problem.train.y
        x = (x - x.mean(0)) / x.std(0)
        for _ in range(5):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x, "input", "task"), y)
            loss.backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    reference = train(load_problem(DataSpec(dataset=files["csv"]), SEED, "s"))
    for kind in ("parquet", "npz", "datasets"):
        assert torch.equal(reference, train(load_problem(DataSpec(dataset=files[kind]), SEED,
                                                         "s"))), kind
    assert torch.equal(reference, train(from_dataset(WineDataset(wine), seed=SEED)))


def test_classes_n_and_split_work_for_files(files):
    p = load_problem(DataSpec(dataset=files["csv"], classes=["class_2", "class_0"], n=100,
                              split=(0.6, 0.2, 0.2)), 0, "s")
    assert p.task.labels == ("class_2", "class_0")
    assert sum(p.meta["sizes"].values()) == 100
    by_id = load_problem(DataSpec(dataset=files["csv"], classes=[2, 0], n=100), 0, "s")
    _same(p, by_id)


def test_splits_kept_in_the_run_folder_and_checked(files, tmp_path):
    import shutil

    csv = tmp_path / "w.csv"
    shutil.copy(files["csv"], csv)
    with run_folder(tmp_path / "run"):
        first = load_problem(DataSpec(dataset=str(csv)), 0, "source")
    kept = tmp_path / "run" / "data" / "source-w.csv.splits.json"
    assert kept.is_file()
    again = load_problem(DataSpec(dataset=str(csv)), 0, "source", run_dir=tmp_path / "run")
    _same(first, again)
    csv.write_text(csv.read_text() + csv.read_text().splitlines()[1] + "\n")
    with pytest.raises(DataError, match="data changed since this run split it"):
        load_problem(DataSpec(dataset=str(csv)), 0, "source", run_dir=tmp_path / "run")


def test_domain_column_picks_rows_and_names_the_domain(wine, tmp_path):
    frame = wine.assign(site=np.where(np.arange(len(wine)) % 2 == 0, "lab_a", "lab_b"))
    path = tmp_path / "sites.csv"
    frame.to_csv(path, index=False)
    a = load_problem(DataSpec(dataset=str(path), domain_column="site", domain_value="lab_a"),
                     0, "source")
    assert a.domain.name == "lab_a" and a.domain.input_shape == (13,)
    assert sum(a.meta["sizes"].values()) == 89
    with pytest.raises(DataError, match="'lab_c' is not in column 'site'.*lab_a.*lab_b"):
        load_problem(DataSpec(dataset=str(path), domain_column="site", domain_value="lab_c"),
                     0, "s")
    with pytest.raises(DataError, match="holds domains.*lab_a.*domain_value"):
        load_problem(DataSpec(dataset=str(path), domain_column="site"), 0, "s")


def test_split_column_keeps_given_splits(wine, tmp_path):
    frame = wine.assign(part=np.resize(["train", "train", "validation", "test"], len(wine)))
    path = tmp_path / "split.csv"
    frame.to_csv(path, index=False)
    p = load_problem(DataSpec(dataset=str(path), split_column="part"), 0, "s")
    assert p.meta["sizes"] == {"train": 90, "val": 44, "test": 44}
    frame.loc[3, "part"] = "tst"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="'tst' \\(row 3\\)"):
        load_problem(DataSpec(dataset=str(path), split_column="part"), 0, "s")


# -- bad input ---------------------------------------------------------------------------------


def test_misspelt_columns_suggest_the_near_miss(files):
    with pytest.raises(DataError, match="`label` names column 'lable'.*Did you mean 'label'"):
        load_problem(DataSpec(dataset=files["csv"], label="lable"), 0, "s")
    with pytest.raises(DataError, match="'alcohl'.*Did you mean 'alcohol'"):
        load_problem(DataSpec(dataset=files["csv"], features=["alcohl"]), 0, "s")


def test_no_label_column_lists_columns(wine, tmp_path):
    path = tmp_path / "t.csv"
    wine.rename(columns={"label": "cultivar"}).to_csv(path, index=False)
    with pytest.raises(DataError, match="columns: alcohol.*cultivar.*set `label:`"):
        load_problem(DataSpec(dataset=str(path)), 0, "s")


def test_nan_features_named_with_rows(wine, tmp_path):
    frame = wine.copy()
    frame.loc[[4, 9], "magnesium"] = np.nan
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="'magnesium' has 2 missing.*row\\(s\\) 4, 9"):
        load_problem(DataSpec(dataset=str(path)), 0, "s")


def test_nan_labels_counted(wine, tmp_path):
    frame = wine.copy()
    frame.loc[[2], "label"] = None
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="column 'label': 1 label\\(s\\) are missing.*row\\(s\\) 2"):
        load_problem(DataSpec(dataset=str(path)), 0, "s")


def test_non_numeric_features_named(wine, tmp_path):
    path = tmp_path / "t.csv"
    wine.assign(colour=["red"] * len(wine)).to_csv(path, index=False)
    with pytest.raises(DataError, match="'colour' \\(\\w+\\) are not numeric.*one-hot"):
        load_problem(DataSpec(dataset=str(path)), 0, "s")


def test_mixed_label_types_refused(wine):
    labels = wine["label"].astype(object).copy()
    labels.iloc[5] = 3
    with pytest.raises(DataError, match="mix types"):
        from_dataframe(wine.assign(label=labels))


def test_labels_outside_the_declared_list(files):
    with pytest.raises(DataError, match="not in the declared label list.*'class_2'"):
        load_problem(DataSpec(dataset=files["csv"], labels=["class_0", "class_1"]), 0, "s")


def test_real_valued_npz_target_needs_task(tmp_path):
    path = tmp_path / "r.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(30, 4)), y=rng.normal(size=30))
    with pytest.raises(DataError, match="task: regression"):
        load_problem(DataSpec(dataset=str(path)), 0, "target")
    p = load_problem(DataSpec(dataset=str(path), task="regression"), 0, "target")
    assert p.task.kind == "regression" and p.train.y.shape[1] == 1


def test_npz_object_arrays_refused_never_unpickled(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, x=np.zeros((5, 2)), y=np.array([{"a": 1}] * 5, dtype=object))
    with pytest.raises(DataError, match="array 'y' holds Python objects.*never loads"):
        load_problem(DataSpec(dataset=str(path)), 0, "s")


def test_npz_string_labels_presplit(tmp_path):
    path = tmp_path / "s.npz"
    x = np.arange(24, dtype=np.float32).reshape(12, 2)
    y = np.array(["cat", "dog"] * 6)
    np.savez(path, x_train=x[:6], y_train=y[:6], x_val=x[6:9], y_val=y[6:9], x_test=x[9:],
             y_test=y[9:])
    p = load_problem(DataSpec(dataset=str(path)), 0, "s")
    assert p.task.labels == ("cat", "dog") and p.meta["sizes"] == {"train": 6, "val": 3,
                                                                  "test": 3}
    assert torch.equal(p.train.x, torch.as_tensor(x[:6]))


def test_unlabelled_npz(tmp_path):
    path = tmp_path / "u.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(30, 4)))
    with pytest.raises(DataError, match="holds no labels.*`labels: \\[...\\]`"):
        load_problem(DataSpec(dataset=str(path)), 0, "target", allow_unlabelled=True)
    spec = DataSpec(dataset=str(path), labels=["a", "b"])
    with pytest.raises(DataError, match=r"target: 'u' \(.*u.npz: the archive has no y arrays\) "
                                        r"holds no labels, but training"):
        load_problem(spec, 0, "target")
    p = load_problem(spec, 0, "target", allow_unlabelled=True)
    assert p.unlabelled and p.class_counts == {} and p.present_labels() == ("a", "b")
    assert bool((p.train.y == -1).all()) and sum(p.meta["sizes"].values()) == 30


def test_columns_on_npz_refused(files):
    with pytest.raises(ConfigError, match="label name\\(s\\) columns"):
        load_problem(DataSpec(dataset=files["npz"], label="y"), 0, "s")


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="Cannot read .*bad.parquet as a parquet table"):
        load_problem(DataSpec(dataset=str(bad)), 0, "s")
    with pytest.raises(DataError, match="does not exist"):
        load_problem(DataSpec(dataset=str(tmp_path / "missing.csv")), 0, "s")


def test_text_column_needs_a_tokenizer(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": ["good", "bad", "fine"] * 4, "label": ["p", "n", "p"] * 4}).to_csv(
        path, index=False)
    with pytest.raises(DataError, match="needs a tokenizer.*minilm_l6"):
        load_problem(DataSpec(dataset=str(path), text="text"), 0, "s")
