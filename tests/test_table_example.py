"""examples/table_domain_adaptation.yaml: a CSV with a domain column, run end to end through
``tlroutes run`` (quick epochs), and resumed from its kept splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli
from tests.make_wine_sites import OUT, make_table

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
    out = tmp_path / "out"
    cli("run", str(run_file), "--out", str(out), "--quiet", check=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["route"] == "domain_adaptation"
    assert summary["source"] == "wine_sites" and 0 <= summary["metrics"]["accuracy"] <= 1
    kept = json.loads((out / "data" / "target-wine_sites.csv.splits.json").read_text())
    assert len(kept["train"]) + len(kept["val"]) + len(kept["test"]) == 88
    # a resume of the finished run reads the kept splits back (and the run file's checks pass)
    cli("run", str(run_file), "--out", str(out), "--quiet", "--resume", check=True, cwd=ROOT)
