"""Shared test helpers: small run files, subprocess runs of the CLI, the ``one_thread`` fixture
and :func:`summary_dict`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """Run the test on one torch thread, then restore the count.

    Tiny networks run fastest on one thread, steadiest on a busy machine, and with the same float
    reductions everywhere. A test file opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def summary_dict(result) -> dict:
    """A run's summary as a plain dict, whether ``run()`` returned a dict or a typed summary."""
    to_dict = getattr(result, "to_dict", None)
    return to_dict() if callable(to_dict) else result


def small_run(**overrides) -> dict:
    """A Task Fine-Tuning run on digits that takes a few seconds."""
    run = {
        "route": "task_fine_tuning",
        "seed": 3,
        "source": {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "n": 400},
        "target": {"dataset": "digits", "classes": [5, 6, 7, 8, 9], "n": 120},
        "model": {"trunk": "mlp", "trunk_args": {"dropout": 0.1}},
        "source_training": {"epochs": 3, "batch_size": 32},
        "target_training": {"epochs": 3, "batch_size": 32},
        "hardware": {"accelerator": "cpu"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(run.get(key), dict):
            run[key] = {**run[key], **value}
        else:
            run[key] = value
    return run


def write_run(path: Path, run: dict) -> Path:
    path.write_text(yaml.safe_dump(run))
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "2"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run ``tlroutes ARGS`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "tlroutes.cli", *args], capture_output=True, text=True,
        env=cli_env(), **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tlroutes {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def run_file(tmp_path):
    return write_run(tmp_path / "run.yaml", small_run())
