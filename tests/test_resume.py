"""A run killed mid-training and resumed ends bit-identical to one never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import cli, cli_env, small_run, write_run


def _final_weights(run_dir: Path) -> dict:
    out = {}
    for stage in ("source", "target", "baseline"):
        for key, value in load_file(run_dir / "checkpoints" / stage / "final.safetensors").items():
            out[f"{stage}/{key}"] = value
    return out


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    # Long enough to be killed in the middle of the target stage.
    run = small_run(target_training={"epochs": 12, "batch_size": 8})
    run_file = write_run(tmp_path / "run.yaml", run)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    cli("run", str(run_file), "--out", str(whole), "--quiet", check=True)

    proc = subprocess.Popen(
        [sys.executable, "-m", "tlroutes.cli", "run", str(run_file), "--out", str(cut),
         "--quiet"], env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    pointer = cut / "checkpoints" / "target" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if pointer.is_file() and json.loads(pointer.read_text())["epoch"] >= 2:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "summary.json").exists(), "the run finished before it could be killed"
    assert not (cut / "checkpoints" / "target" / "done.json").exists()

    refused = cli("run", str(run_file), "--out", str(cut), "--quiet")
    assert refused.returncode == 2 and "--resume" in refused.stderr

    cli("run", str(run_file), "--out", str(cut), "--quiet", "--resume", check=True)
    a, b = _final_weights(whole), _final_weights(cut)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), f"{key} differs after resume"
    sa = json.loads((whole / "summary.json").read_text())
    sb = json.loads((cut / "summary.json").read_text())
    assert sa["metrics"] == sb["metrics"] and sa["baseline"] == sb["baseline"]
    epochs = [r["epoch"] for r in map(json.loads, (cut / "metrics.jsonl").read_text().splitlines())
              if r["stage"] == "target"]
    assert epochs == list(range(12)), "metrics.jsonl must hold each target epoch exactly once"


def test_resume_with_a_changed_run_file_is_refused(tmp_path):
    run_file = write_run(tmp_path / "run.yaml", small_run(
        source_training={"epochs": 1}, target_training={"epochs": 1}, baseline=False))
    cli("run", str(run_file), "--out", str(tmp_path / "r"), "--quiet", check=True)
    changed = write_run(tmp_path / "changed.yaml", small_run(
        source_training={"epochs": 2}, target_training={"epochs": 1}, baseline=False))
    proc = cli("run", str(changed), "--out", str(tmp_path / "r"), "--quiet", "--resume")
    assert proc.returncode == 2
    assert "source_training" in proc.stderr and "Traceback" not in proc.stderr
