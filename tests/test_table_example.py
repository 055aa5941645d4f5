"""examples/table_domain_adaptation.yaml: a CSV with a domain column, run end to end through
``tlroutes run`` (quick epochs), and resumed from its kept splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli
from tests.make_wine_sites import OUT, make_table
from tlroutes.config import load_run_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "table_domain_adaptation.yaml"


def test_the_shipped_csv_is_what_its_script_makes(tmp_path):
    make_table().to_csv(tmp_path / "wine_sites.csv", index=False)
    assert (tmp_path / "wine_sites.csv").read_text() == OUT.read_text()


@pytest.mark.slow
def test_table_example_runs_through_the_cli(tmp_path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["source_training"]["epochs"] = spec["target_training"]["epochs"] = 5
    run_file = tmp_path / "table.yaml"
    run_file.write_text(yaml.safe_dump(spec))
    (tmp_path / "data").symlink_to(EXAMPLE.parent / "data")  # the data beside the run file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    # run from a folder without the data: the relative path is read beside the run file
    cli("run", str(run_file), "--out", str(out), "--quiet", check=True, cwd=elsewhere)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["route"] == "domain_adaptation"
    assert summary["source"] == "wine_sites" and 0 <= summary["metrics"]["accuracy"] <= 1
    kept = json.loads((out / "data" / "target-wine_sites.csv.splits.json").read_text())
    assert len(kept["train"]) + len(kept["val"]) + len(kept["test"]) == 88
    # a resume of the finished run reads the kept splits back (and the run file's checks pass)
    cli("run", str(run_file), "--out", str(out), "--quiet", "--resume", check=True, cwd=ROOT)


def test_the_example_finds_its_table_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_run_file(EXAMPLE)
    for block in (spec.source, spec.target):
        assert Path(block.dataset) == (EXAMPLE.parent / "data" / "wine_sites.csv").resolve()
    # a path that exists in the current folder is read there (as typed on the command line)
    (tmp_path / "data").mkdir()
    make_table().to_csv(tmp_path / "data" / "wine_sites.csv", index=False)
    assert load_run_file(EXAMPLE).source.dataset == "data/wine_sites.csv"


def test_the_package_ships_every_example_file():
    """pyproject's package-data covers each file of src/tlroutes/examples (yaml and data), so
    an installed tlroutes has the examples' data, not only their run files."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["tlroutes"]
    package = ROOT / "src" / "tlroutes"
    files = [p.relative_to(package).as_posix() for p in (package / "examples").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert any(f.endswith(".csv") for f in files)
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, missing
