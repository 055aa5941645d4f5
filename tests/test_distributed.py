"""Two CPU processes (DDP over gloo) train one run and agree with a single process."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.conftest import cli, small_run, write_run

# Float sums run in a different order across two processes, so the weights agree to rounding,
# not bit for bit. Stated tolerance: every weight within 1e-4 (absolute) after all stages.
TOLERANCE = 1e-4


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    # Batches divide evenly between the two processes (240 = 6 × 40, 72 = 3 × 24), so the
    # mean of the per-process mean losses is the single-process mean loss.
    run = small_run(
        model={"trunk": "mlp", "trunk_args": {"dropout": 0.0}},
        source_training={"epochs": 2, "batch_size": 40},
        target_training={"epochs": 2, "batch_size": 24},
    )
    one = write_run(tmp_path / "one.yaml", run)
    two = write_run(tmp_path / "two.yaml", {**run, "hardware": {"accelerator": "cpu",
                                                                 "devices": 2, "threads": 1}})
    cli("run", str(one), "--out", str(tmp_path / "one"), "--quiet", check=True, timeout=300)
    proc = cli("run", str(two), "--out", str(tmp_path / "two"), "--quiet", check=True,
               timeout=300)
    assert "Traceback" not in proc.stderr
    for stage in ("source", "target", "baseline"):
        a = load_file(tmp_path / "one" / "checkpoints" / stage / "final.safetensors")
        b = load_file(tmp_path / "two" / "checkpoints" / stage / "final.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            diff = (a[key] - b[key]).abs().max().item()
            assert diff <= TOLERANCE, f"{stage}/{key} differs by {diff}"
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    sb = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert sa["metrics"]["accuracy"] == pytest.approx(sb["metrics"]["accuracy"], abs=0.02)
