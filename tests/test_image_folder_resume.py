"""An image-folder run (read lazily, augmented, two loader workers) killed mid-stage and resumed
ends bit-identical to one never stopped: the kept splits, every stage's weights, the metrics."""

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

from tests.conftest import cli, cli_env, write_run
from tlroutes.data.digit_images import write_digit_images

AUGMENT = {"train": [{"random_crop": {"padding": 2}}, {"rotation": {"degrees": 10}},
                     {"horizontal_flip": {}}]}


def _run_file(tmp_path: Path) -> Path:
    images = write_digit_images(tmp_path / "digit_images", n=240, size=16)
    block = {"dataset": str(images), "domain": "digit_images", "transforms": AUGMENT}
    return write_run(tmp_path / "run.yaml", {
        "route": "task_fine_tuning", "seed": 0,
        "source": {**block, "classes": [0, 1, 2, 3, 4]},
        "target": {**block, "classes": [5, 6, 7, 8, 9], "split": [0.4, 0.2, 0.4]},
        "model": {"trunk": "cnn2d", "trunk_args": {"channels": [8, 8]}},
        "source_training": {"epochs": 2, "batch_size": 16, "lr": 0.003},
        # long enough to be killed in the middle of the target stage
        "target_training": {"epochs": 10, "batch_size": 8, "lr": 0.003},
        "hardware": {"accelerator": "cpu", "threads": 1, "workers": 2},
    })


def _weights(run_dir: Path) -> dict:
    out = {}
    for stage in ("source", "target", "baseline"):
        for key, value in load_file(run_dir / "checkpoints" / stage / "final.safetensors").items():
            out[f"{stage}/{key}"] = value
    return out


@pytest.mark.slow
def test_sigkill_then_resume_on_an_augmented_image_folder_is_bit_identical(tmp_path):
    run_file = _run_file(tmp_path)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    cli("run", str(run_file), "--out", str(whole), "--quiet", check=True)

    proc = subprocess.Popen(
        [sys.executable, "-m", "tlroutes.cli", "run", str(run_file), "--out", str(cut),
         "--quiet"], env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = cut / "checkpoints" / "target" / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if pointer.is_file() and json.loads(pointer.read_text())["epoch"] >= 2:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # the loader workers die with their parent
    proc.wait()
    assert not (cut / "summary.json").exists(), "the run finished before it could be killed"
    assert not (cut / "checkpoints" / "target" / "done.json").exists()

    cli("run", str(run_file), "--out", str(cut), "--quiet", "--resume", check=True)
    for kept in sorted((whole / "data").glob("*.json")):
        assert kept.read_text() == (cut / "data" / kept.name).read_text(), kept.name
    a, b = _weights(whole), _weights(cut)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), f"{key} differs after resume"
    sa = json.loads((whole / "summary.json").read_text())
    sb = json.loads((cut / "summary.json").read_text())
    assert sa["metrics"] == sb["metrics"] and sa["baseline"] == sb["baseline"]
    epochs = [r["epoch"] for r in map(json.loads, (cut / "metrics.jsonl").read_text().splitlines())
              if r["stage"] == "target"]
    assert epochs == list(range(10)), "metrics.jsonl must hold each target epoch exactly once"
