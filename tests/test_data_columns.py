"""One rule for split and domain columns in every table (CSV/TSV/Parquet, image lists): the
columns named ``split`` and ``domain`` are read as such unless the data block names others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tlroutes.config import DataSpec
from tlroutes.data.load import load_problem
from tlroutes.errors import DataError


def _table(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "a": rng.normal(size=n), "b": rng.normal(size=n),
        "label": np.where(np.arange(n) % 2 == 0, "even", "odd"),
        "split": (["train"] * 4 + ["val", "test"]) * (n // 6),
        "domain": ["site_1"] * (n // 2) + ["site_2"] * (n // 2),
    })


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_reads_its_split_and_domain_columns_by_default(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    frame = _table()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    with pytest.raises(DataError, match=r"domain_column 'domain' holds domains .*site_1.*"
                                        r"domain_value"):
        load_problem(DataSpec(dataset=str(path)), 0, "s")
    p = load_problem(DataSpec(dataset=str(path), domain_value="site_2"), 0, "s")
    assert p.meta["split_from"] == "column" and p.domain.name == "site_2"
    assert (len(p.train), len(p.val), len(p.test)) == (20, 5, 5)
    assert p.meta["features"] == ["a", "b"]  # neither column is a feature
    # a named column is used as named; a one-valued domain column needs no value
    one = frame[frame.domain == "site_1"].rename(columns={"split": "part"})
    one.to_csv(tmp_path / "one.csv", index=False)
    p = load_problem(DataSpec(dataset=str(tmp_path / "one.csv"), split_column="part"), 0, "s")
    assert p.meta["split_from"] == "column" and p.meta["features"] == ["a", "b"]


def test_an_image_list_follows_the_same_rule(tmp_path):
    from PIL import Image

    rows = []
    for i in range(24):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(tmp_path / f"{i}.png")
        split = ("train", "train", "val", "test")[(i // 2) % 4]
        rows.append((f"{i}.png", "dark" if i < 12 else "light", split,
                     "scanner_a" if i % 2 else "b"))
    pd.DataFrame(rows, columns=["path", "label", "split", "domain"]).to_csv(
        tmp_path / "list.csv", index=False)
    with pytest.raises(DataError, match="domain_value"):
        load_problem(DataSpec(dataset=str(tmp_path / "list.csv")), 0, "s")
    p = load_problem(DataSpec(dataset=str(tmp_path / "list.csv"), domain_value="scanner_a"), 0,
                     "s")
    assert p.meta["split_from"] == "column" and (len(p.train), len(p.val), len(p.test)) == (
        6, 3, 3)
