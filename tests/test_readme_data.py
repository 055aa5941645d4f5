"""The README's "Bring your own data" snippets run: every data block is a valid one, the tables,
archives, folders and the run file it shows load from files made here, and the Python snippet
returns problems."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.make_wine_sites import OUT as WINE
from tlroutes.config import DataSpec, parse_run
from tlroutes.data.digit_images import write_digit_images
from tlroutes.data.load import load_problem
from tlroutes.problem import Problem

README = Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Bring your own data")
    return text[start:text.index("\n## ", start + 1)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)


def _chunks(block: str) -> list[dict]:
    """Each top-level key of a YAML block on its own (the README repeats `source:` to show
    alternatives), with comments dropped."""
    chunks, current = [], []
    for line in block.splitlines():
        if line and not line.startswith(" ") and current:
            chunks.append("\n".join(current))
            current = []
        current.append(line)
    chunks.append("\n".join(current))
    return [yaml.safe_load(c) for c in chunks if c.strip()]


@pytest.fixture
def files(tmp_path, monkeypatch) -> Path:
    """The files the snippets name, made in the current folder."""
    monkeypatch.chdir(tmp_path)
    wine = pd.read_csv(WINE)
    wine.to_csv("wines.csv", index=False)
    for site in ("lab_a", "lab_b"):
        part = wine[wine.site == site].drop(columns="site")
        part.to_csv(f"{site}.csv", index=False)
    wine[wine.site == "lab_b"].drop(columns=["site", "cultivar"]).to_csv(
        "lab_b_unlabelled.csv", index=False)
    rng = np.random.default_rng(0)
    n = 90
    pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n),
                  "y": rng.integers(0, 2, n).astype(str),
                  "part": ["train", "train", "train", "val", "test", "test"] * (n // 6)}
                 ).to_parquet("sensors.parquet")
    np.savez("data.npz", x=rng.normal(size=(n, 4)).astype("float32"), y=np.arange(n) % 3)
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_pandas(wine.drop(columns="site").rename(
        columns={"cultivar": "label"})).save_to_disk("my_saved_dataset")
    write_digit_images(tmp_path / "photos", n=60, size=16)
    scans = write_digit_images(tmp_path / "scans", n=60, size=16, table=True)
    (scans / "labels.csv").rename(scans / "index.csv")
    return tmp_path


def test_every_data_block_in_the_section_loads(files):
    blocks = [c for b in _blocks("yaml") for c in _chunks(b)]
    data = [(k, v) for c in blocks for k, v in c.items() if k in ("source", "target")]
    assert len(data) >= 8
    for role, block in data:
        spec = DataSpec.model_validate(block)
        problem = load_problem(spec, 0, role, allow_unlabelled=True)
        assert len(problem.train) and len(problem.test), block


def test_the_unlabelled_run_file_in_the_section_runs(files):
    shown = next(b for b in _blocks("yaml") if b.startswith("route:"))
    spec = yaml.safe_load(shown)
    spec.update(model={"trunk": "mlp"}, hardware={"accelerator": "cpu", "threads": 1},
                source_training={"epochs": 2}, target_training={"epochs": 1})
    from tlroutes.runner import run

    summary = run(parse_run(spec), files / "run", progress=False)
    assert summary.metrics == {} and "no target metrics" in summary.metric_note


def test_the_python_snippet_runs():
    (code,) = _blocks("python")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype("float32")
    y = np.array(["cat", "dog"] * 30)
    df = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60),
                       "species": ["setosa", "virginica", "versicolor"] * 20})
    torch_dataset = torch.utils.data.TensorDataset(torch.as_tensor(x),
                                                   torch.as_tensor(np.arange(60) % 2))
    scope = {"x": x, "y": y, "df": df, "torch_dataset": torch_dataset}
    exec(compile(code, "README.md", "exec"), scope)
    assert isinstance(scope["p"], Problem)
