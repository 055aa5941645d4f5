"""A run on lazily read, augmented data, read by worker processes and budgeted in steps, killed
mid-stage and resumed, ends bit-identical to one never stopped."""

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

from tests.conftest import cli_env

SCRIPT = """
import sys, torch
from tests.test_lazy_engine import DOMAIN, TASK, _lazy, _noise, _split
from tlroutes.model import build_model
from tlroutes.train.engine import Stage, Trainer
from tlroutes.train.hardware import Hardware
from tlroutes.train.steps import SupervisedStep
from tlroutes.train.streams import Stream
from tlroutes.train.engine import evaluate_split

run_dir, resume = sys.argv[1], sys.argv[2] == "resume"
train, val = _lazy(_split(400), _noise), _lazy(_split(60, seed=1))
trainer = Trainer(run_dir, seed=7, hardware=Hardware(accelerator="cpu", workers=2, threads=1),
                  progress=False, resume=resume)
trainer.seed_for("model")
model = build_model(DOMAIN, TASK, trunk="cnn2d", trunk_args={"channels": (8, 8)})
def validate():
    out = evaluate_split(model, model, val.x)
    return {"accuracy": float((out.argmax(1) == val.y).float().mean())}
trainer.fit(Stage(name="s", step=SupervisedStep(model, TASK),
                  streams={"train": Stream(train, 16, seed=3)}, validate=validate,
                  epochs=None, steps=120, val_every_steps=6, lr=3e-3))
"""


def _run(run_dir: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(run_dir), mode], env=cli_env(),
                            cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_then_resume_with_lazy_augmented_data_is_bit_identical(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    proc = _run(whole, "fresh")
    assert proc.wait() == 0, proc.stderr.read().decode()

    proc = _run(cut, "fresh")
    pointer = cut / "checkpoints" / "s" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if pointer.is_file() and json.loads(pointer.read_text())["epoch"] >= 3:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "checkpoints" / "s" / "done.json").exists(), "finished before the kill"

    proc = _run(cut, "resume")
    assert proc.wait() == 0, proc.stderr.read().decode()
    for name in ("final", "best"):
        a = load_file(whole / "checkpoints" / "s" / f"{name}.safetensors")
        b = load_file(cut / "checkpoints" / "s" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
    records = []
    for run in (whole, cut):
        done = json.loads((run / "checkpoints" / "s" / "done.json").read_text())
        records.append([{k: v for k, v in r.items() if k != "time_s"} for r in done["history"]])
    assert records[0] == records[1]
    assert [r["step"] for r in records[1]] == list(range(6, 121, 6))
