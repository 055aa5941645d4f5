"""Measurement on data read lazily: ``inspect`` and ``plan`` read a seeded subsample of an image
folder, in chunks (tlroutes.measure.sample), never the whole folder; a CSV pair is measured as
tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.make_wine_sites import OUT as WINE
from tlroutes.data.digit_images import write_digit_images
from tlroutes.data.sources.images import ImageReader
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.measure.evidence import inspect
from tlroutes.measure.placement import clear_cache
from tlroutes.measure.sample import held_inputs, held_problem, sample_rows
from tlroutes.planner import plan

pytestmark = pytest.mark.usefixtures("one_thread")

N = 300
CAP = 40


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """Digits at 32 px, and the same digits inverted (a real shift), as two image folders."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pair")
    source = write_digit_images(root / "plain", n=N)
    inverted = root / "inverted"
    for path in sorted(source.rglob("*.png")):
        out = inverted / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - np.asarray(Image.open(path))).save(out)
    return source, inverted


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The image files read, in order."""
    seen: list[str] = []
    original = ImageReader.read

    def read(self, i):
        seen.append(str(self.paths[i]))
        return original(self, i)

    monkeypatch.setattr(ImageReader, "read", read)
    clear_cache()
    return seen


def test_held_inputs_read_in_chunks_and_equal_the_tensor():
    x = torch.randn(50, 3, 40, 40)

    class Reader:
        def __len__(self):
            return 50

        def read(self, i):
            return x[i]

    lazy = LazyInputs(Reader(), sample_shape=(3, 40, 40))
    rows = sample_rows(50, 20, seed=3)
    assert rows.tolist() == sorted(rows.tolist()) and len(rows) == 20
    assert torch.equal(sample_rows(50, 20, seed=3), rows)
    assert torch.equal(held_inputs(lazy, rows, chunk=7), x[rows])
    pooled = held_inputs(lazy, rows, max_side=32, chunk=7)
    assert pooled.shape == (20, 3, 32, 32)
    assert torch.allclose(pooled, held_inputs(x, rows, max_side=32))


def test_inspect_an_image_folder_pair_reads_a_seeded_subsample(folders, reads):
    source, target = folders
    evidence = inspect(str(source), str(target), max_samples=CAP, seeds=1, permutations=50)
    pair = evidence.pairs[0]
    assert pair.domain.verdict == "different"  # inverted digits
    assert pair.domain.n["source_available"] <= 2 * CAP
    # train and validation of each side, at most CAP each: never the whole folder
    assert 0 < len(reads) <= 4 * CAP < 2 * N
    assert pair.task.label_relation == "identical"
    assert evidence.problems["plain"]["train"] > 4 * CAP  # the whole folder is a problem


def test_the_same_seed_reads_the_same_files(folders, reads):
    source, _ = folders
    from tlroutes.config import DataSpec
    from tlroutes.data.load import load_problem

    problem = load_problem(DataSpec(dataset=str(source)), 0, "s")
    assert problem.train.is_lazy
    held_problem(problem, CAP, seed=5)
    first = list(reads)
    reads.clear()
    again = held_problem(problem, CAP, seed=5)
    assert reads == first and not again.train.is_lazy and len(again.train) == CAP


def test_plan_places_an_image_folder_pair(folders, reads):
    source, target = folders
    spec = {"route": "auto", "seed": 0,
            "source": {"dataset": str(source)}, "target": {"dataset": str(target)},
            "model": {"trunk": "mlp"}, "hardware": {"accelerator": "cpu"}}
    placed = plan(spec, max_samples=CAP, seeds=1, permutations=50)
    assert placed.route.value in ("domain_adaptation", "weight_sharing")
    assert 0 < len(reads) <= 4 * CAP


def test_inspect_and_plan_on_a_csv_pair(tmp_path):
    table = pd.read_csv(WINE)
    for site in ("lab_a", "lab_b"):
        table[table.site == site].drop(columns="site").to_csv(tmp_path / f"{site}.csv",
                                                               index=False)
    a = {"dataset": str(tmp_path / "lab_a.csv"), "label": "cultivar"}
    b = {"dataset": str(tmp_path / "lab_b.csv"), "label": "cultivar"}
    evidence = inspect(a, b, seeds=1, permutations=50)
    pair = evidence.pairs[0]
    assert pair.domain.matching == "class-matched" and pair.task.label_relation == "identical"
    placed = plan({"route": "auto", "seed": 0, "source": a, "target": b,
                   "model": {"trunk": "mlp"}}, seeds=1, permutations=50)
    assert placed.route.value in ("domain_adaptation", "task_fine_tuning")
