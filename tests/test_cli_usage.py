"""The command line tells the truth (issue 13, items 6 and 8): usage errors are one line and exit
2; a run that stops says what stopped it and whether ``--resume`` can continue; a Parallel
Training run with a failed job exits non-zero unless ``--allow-failed-jobs``."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli, small_run, write_run
from tlroutes.cli import EXIT_FAILED_JOBS
from tlroutes.runfolder.failure import FAILURE_FILE


@pytest.mark.parametrize("args, words", [
    (("run", "x.yaml", "--threads", "1"), "No such option: --threads"),
    (("run",), "Missing argument"),
    (("run", "a.yaml", "b.yaml"), "unexpected extra argument"),
    (("nosuch",), "No such command 'nosuch'"),
    (("routes", "--highlight"), "requires an argument"),
    (("inspect", "digits", "--permutations", "1000000000000"), "less than or equal to 100000"),
    (("demo", "--seeds", "0"), "'--seeds'"),
])
def test_usage_errors_are_one_line_and_exit_2(args, words):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_no_command_prints_the_help():
    proc = cli()
    assert proc.returncode == 2 and "Usage" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_diverged_run_says_what_stopped_and_resume_refuses_at_once(tmp_path):
    run_file = write_run(tmp_path / "run.yaml", small_run(
        source={"n": 200}, target={"n": 60},
        source_training={"epochs": 1, "lr": 1e30}, target_training={"epochs": 1},
        hardware={"threads": 1}))
    out = tmp_path / "out"
    proc = cli("run", str(run_file), "--out", str(out), "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "loss became" in proc.stderr and "start it in a new --out" in proc.stderr
    record = json.loads((out / FAILURE_FILE).read_text())
    assert record["error"] == "TrainingDivergedError" and record["resumable"] is False
    again = cli("run", str(run_file), "--out", str(out), "--quiet", "--resume")
    assert again.returncode == 2 and "would stop the same way" in again.stderr
    assert "loss became" in again.stderr  # the cause, not only "resume with --resume"


def _parallel(tmp_path, name: str):
    jobs = {
        "ok": {"data": {"dataset": "digits", "n": 100}, "model": {"trunk": "mlp"},
               "training": {"epochs": 1}},
        "misfit": {"data": {"dataset": "mnist1d", "n": 100}, "model": {"trunk": "cnn2d"},
                   "training": {"epochs": 1}},
    }
    return write_run(tmp_path / name, {
        "route": "parallel_training", "seed": 1,
        "recipe": {"backend": "interleaved", "jobs": jobs},
        "hardware": {"accelerator": "cpu", "threads": 1}})


@pytest.mark.slow
def test_a_failed_parallel_job_exits_non_zero_naming_it(tmp_path):
    run_file = _parallel(tmp_path, "pt.yaml")
    proc = cli("run", str(run_file), "--out", str(tmp_path / "a"), "--quiet")
    assert proc.returncode == EXIT_FAILED_JOBS, proc.stderr
    assert "misfit: No stem" in proc.stderr and "1 Parallel Training job(s) failed" in proc.stderr
    allowed = cli("run", str(run_file), "--out", str(tmp_path / "b"), "--quiet",
                  "--allow-failed-jobs")
    assert allowed.returncode == 0 and "warning:" in allowed.stderr and "misfit" in allowed.stderr
