"""Parallel Training: every backend ends each job as one-after-another training does; a failing
job fails alone; ``auto`` says why it chose.

Tolerances: ``interleaved`` — bit-identical weights and metrics; ``processes`` and ``ray`` —
bit-identical when the loop and the workers use one thread each; ``fused`` — trained in float64
(``precision: 64-true``) and compared as derived in :data:`FUSED_RTOL` and :data:`FUSED_ATOL`,
with the same metrics, best epochs and early stops.

Why float64 for ``fused``: its batched kernels sum in another order than the one-job kernels, and
training amplifies that rounding. In float32 the amplification depends on the CPU's vector width
(1.8e-4 on an AVX-512 machine, under 1e-5 on another), so no float32 tolerance is portable; in
float64 the same amplification stays ~1e-12, far below anything that changes a metric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from tlroutes.cli import summary_table
from tlroutes.config import load_run_file, parse_run
from tlroutes.data import load_builtin
from tlroutes.errors import ConfigError
from tlroutes.runner import resolve, run
from tlroutes.train import parallel
from tlroutes.train.hardware import Hardware, make_fabric
from tlroutes.train.parallel import FusedStep, Prepared, choose_backend, prepare, run_jobs

DIGITS = {"dataset": "digits", "n": 200}
QUICK = {"epochs": 2, "batch_size": 32}


def alike(trunk: str = "mlp", trunk_args: dict | None = None, **training) -> dict:
    """Three unrelated jobs that can fuse: one architecture, one task kind, one training."""
    model = {"trunk": trunk, "trunk_args": trunk_args or {}}
    train = {**QUICK, **training}
    return {
        "parity": {"data": {**DIGITS, "task": "parity"}, "model": model, "training": train},
        "gt4": {"data": {**DIGITS, "task": "gt4", "seed": 5}, "model": model, "training": train},
        "rotated": {"data": {**DIGITS, "task": "parity", "shift": {"rotation": 40}},
                    "model": model, "training": train},
    }


def mixed() -> dict:
    """Three jobs with nothing in common: data, task kind, architecture; one with dropout."""
    return {
        "digits": {"data": {**DIGITS, "task": "digit"},
                   "model": {"trunk": "mlp", "trunk_args": {"width": 32, "dropout": 0.3}},
                   "training": QUICK},
        "signals": {"data": {"dataset": "mnist1d", "task": "parity", "n": 150},
                    "model": {"trunk": "cnn1d", "trunk_args": {"channels": [8, 16]}},
                    "training": {**QUICK, "optimizer": "sgd", "lr": 0.01}},
        "position": {"data": {**DIGITS, "task": "position", "n": 120},
                     "model": {"trunk": "mlp", "trunk_args": {"width": 32}},
                     "training": {"epochs": 3, "batch_size": 16}},
    }


def weights(outcome, name: str) -> dict[str, torch.Tensor]:
    return load_file(Path(outcome.results[name].folder) / "model.safetensors")


FUSED_RTOL = 2.0**-23
"""Relative tolerance of the float64 fused/sequential comparison: one float32 ulp.

The fused backend writes each job's weights through that job's own model, which stays float32
while the stacked weights train in float64 (the sequential backend saves float64). Rounding to
float32 moves a weight by at most half an ulp, 2^-24 × |w|; one ulp, 2^-23, also covers measuring
it relative to the rounded side.
"""
FUSED_ATOL = 1e-9
"""Absolute tolerance of the float64 comparison, for weights near zero where an ulp is tiny.

In float32 the same cases end up to 6.5e-4 apart, 5e3 × float32's epsilon (1.2e-7): that is how
much these few dozen steps amplify a rounding difference. The same amplification of float64's
epsilon (2.2e-16) is ~1e-12; 1e-9 leaves a factor of 1000 and is still far below a change that
moves a metric (the metrics are compared to 1e-4, and best epochs and early stops exactly).
"""


def assert_same_jobs(a, b, rtol: float | None = None, atol: float | None = None) -> None:
    """Same jobs finished with the same metrics and weights (exactly, or within ``rtol``/``atol``,
    compared in float64)."""
    assert list(a.results) == list(b.results)
    for name, ra in a.results.items():
        rb = b.results[name]
        assert ra.status == rb.status == "ok", (name, ra.error, rb.error)
        assert (ra.best_epoch, ra.epochs_run, ra.stopped_early) == (
            rb.best_epoch, rb.epochs_run, rb.stopped_early), name
        wa, wb = weights(a, name), weights(b, name)
        assert wa.keys() == wb.keys()
        for key in wa:
            if atol is None:
                assert torch.equal(wa[key], wb[key]), f"{name}: {key} differs"
            else:
                torch.testing.assert_close(wa[key].double(), wb[key].double(), atol=atol,
                                           rtol=rtol)
        if atol is None:
            assert ra.metrics == rb.metrics, name
        else:
            assert ra.metrics.keys() == rb.metrics.keys()
            for key in ra.metrics:
                assert ra.metrics[key] == pytest.approx(rb.metrics[key], abs=1e-4), (name, key)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ equal to the plain loop


def test_interleaved_equals_sequential_bit_for_bit(tmp_path):
    jobs = mixed()
    loop = run_jobs(jobs, tmp_path / "loop", seed=2, backend="sequential")
    turns = run_jobs(jobs, tmp_path / "turns", seed=2, backend="interleaved")
    assert turns.plan.backend == "interleaved"
    assert_same_jobs(loop, turns)
    # each job trained: its own run folder, with the engine's checkpoints
    assert (tmp_path / "turns" / "jobs" / "signals" / "checkpoints" / "signals" /
            "done.json").is_file()


@pytest.mark.parametrize("case", [
    {"trunk": "mlp"},
    # batch-norm statistics are stacked buffers; per-job early stopping (patience 1)
    {"trunk": "cnn2d", "trunk_args": {"channels": [8, 16]}, "epochs": 4, "patience": 1,
     "optimizer": "sgd", "lr": 0.1, "batch_size": 8},
], ids=["mlp", "cnn2d-batchnorm-patience"])
def test_fused_equals_sequential_within_rounding(tmp_path, case):
    jobs = alike(**case)

    def float64() -> object:
        return make_fabric(Hardware(precision="64-true", threads=1))

    loop = run_jobs(jobs, tmp_path / "loop", seed=3, backend="sequential", fabric=float64())
    fused = run_jobs(jobs, tmp_path / "fused", seed=3, backend="fused", fabric=float64())
    assert fused.plan.backend == "fused"
    assert_same_jobs(loop, fused, rtol=FUSED_RTOL, atol=FUSED_ATOL)
    assert (tmp_path / "fused" / "checkpoints" / "fused" / "done.json").is_file()
    if "patience" in case:  # some jobs stop early while another trains on
        assert {r.stopped_early for r in fused.results.values()} == {True, False}


def test_fused_resumes_exactly_after_a_stop(tmp_path, monkeypatch):
    jobs = alike(epochs=3)
    whole = run_jobs(jobs, tmp_path / "whole", seed=4, backend="fused")
    select = FusedStep.select
    calls = []

    def stop_in_second_epoch(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped")
        return select(self, *args)

    monkeypatch.setattr(FusedStep, "select", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, tmp_path / "cut", seed=4, backend="fused")
    monkeypatch.setattr(FusedStep, "select", select)
    resumed = run_jobs(jobs, tmp_path / "cut", seed=4, backend="fused", resume=True)
    assert_same_jobs(whole, resumed)


@pytest.mark.slow
def test_processes_equal_sequential_at_equal_threads(tmp_path):
    jobs = {k: v for k, v in alike().items() if k != "rotated"}
    loop = run_jobs(jobs, tmp_path / "loop", seed=5, backend="sequential")
    procs = run_jobs(jobs, tmp_path / "procs", seed=5, backend="processes", workers=2, threads=1)
    assert_same_jobs(loop, procs)


@pytest.mark.slow
def test_ray_equals_sequential_at_equal_threads(tmp_path):
    pytest.importorskip("ray")
    jobs = {k: v for k, v in alike().items() if k != "rotated"}
    loop = run_jobs(jobs, tmp_path / "loop", seed=6, backend="sequential")
    on_ray = run_jobs(jobs, tmp_path / "ray", seed=6, backend="ray", threads=1)
    assert_same_jobs(loop, on_ray)


# --------------------------------------------------------------------- failures stay alone


def test_a_job_whose_data_does_not_fit_its_model_fails_alone(tmp_path):
    jobs = {**{k: v for k, v in mixed().items() if k == "digits"},
            "misfit": {"data": {"dataset": "mnist1d", "n": 100}, "model": {"trunk": "cnn2d"},
                       "training": QUICK}}
    for backend in ("interleaved", "auto"):
        outcome = run_jobs(jobs, tmp_path / backend, seed=1, backend=backend)
        ok, bad = outcome.results["digits"], outcome.results["misfit"]
        assert ok.ok and 0 <= ok.metrics["accuracy"] <= 1
        assert bad.status == "failed" and "No stem turns signal inputs" in bad.error
        assert bad.error_type == "ConfigError"
        assert "No stem" in (tmp_path / backend / "jobs" / "misfit" / "result.json").read_text()


def _overflowing_npz(path: Path) -> str:
    """Digits parity whose inputs are so large that training overflows within a step."""
    p = load_builtin("digits", task="parity", n=200, seed=3)
    np.savez(path, x_train=(p.train.x * 1e38).numpy(), y_train=p.train.y.numpy(),
             x_val=p.val.x.numpy(), y_val=p.val.y.numpy(), x_test=p.test.x.numpy(),
             y_test=p.test.y.numpy(), labels=np.array(["even", "odd"]))
    return str(path)


def test_a_diverging_job_fails_alone_and_leaves_the_fused_others_exact(tmp_path):
    jobs = alike(optimizer="sgd")  # SGD takes the overflowing gradient at face value
    jobs["rotated"]["data"] = {"dataset": _overflowing_npz(tmp_path / "big.npz")}
    loop = run_jobs(jobs, tmp_path / "loop", seed=3, backend="sequential")
    fused = run_jobs(jobs, tmp_path / "fused", seed=3, backend="fused")
    for outcome in (loop, fused):
        bad = outcome.results["rotated"]
        assert bad.status == "failed" and "the loss became" in bad.error
    assert "fused stage" in fused.results["rotated"].error
    ok = [n for n in jobs if n != "rotated"]
    for name in ok:
        for key, value in weights(loop, name).items():
            torch.testing.assert_close(weights(fused, name)[key], value, atol=1e-5, rtol=0)


def test_summary_and_table_report_each_job_and_each_failure(tmp_path):
    jobs = {**{k: v for k, v in mixed().items() if k != "signals"},
            "misfit": {"data": {"dataset": "mnist1d", "n": 100}, "model": {"trunk": "cnn2d"}}}
    spec = parse_run({"route": "parallel_training", "seed": 1,
                      "recipe": {"jobs": jobs, "backend": "interleaved"},
                      "hardware": {"accelerator": "cpu", "threads": 1}})
    summary = run(spec, tmp_path / "run", progress=False)
    assert summary.title == "Parallel Training"
    assert summary.primary_metric == "mean_accuracy"  # 1 classification job, 1 regression
    jobs = summary.details["jobs"]
    assert summary.metrics["mean_accuracy"] == jobs["digits"]["metrics"]["accuracy"]
    assert summary.metrics["mean_mse"] == jobs["position"]["metrics"]["mse"]
    assert summary.metrics["jobs_failed"] == 1 and "No stem" in summary.details["failed"]["misfit"]
    assert summary.baseline is None and summary.gain is None and summary.baseline_note
    assert (tmp_path / "run" / "summary.json").is_file()
    console = Console(width=200, record=True)
    console.print(summary_table([summary]))
    text = console.export_text()
    assert "Parallel Training" in text and "mean_accuracy" in text and "misfit" in text
    assert "digits accuracy" in text and "position mse" in text


def test_sequential_baseline_reports_zero_gain_and_speedup(tmp_path):
    spec = parse_run({"route": "parallel_training", "seed": 1,
                      "recipe": {"jobs": alike(), "backend": "fused",
                                 "sequential_baseline": True},
                      "hardware": {"accelerator": "cpu", "threads": 1}})
    summary = run(spec, tmp_path / "run", progress=False)
    assert summary.gain == pytest.approx(0, abs=1e-6)
    assert all(j["gain"] == pytest.approx(0, abs=1e-6) for j in summary.details["jobs"].values())
    assert summary.details["speedup"] > 0 and summary.details["sequential_wall_time_s"] > 0


# ----------------------------------------------------------------------------- auto


def test_auto_explains_its_choice(tmp_path):
    one = run_jobs({"only": alike()["parity"]}, tmp_path / "one", backend="auto")
    assert one.plan.backend == "sequential" and "only one job" in one.plan.reason
    device = torch.device("cpu")
    apart = choose_backend([prepare(n, parallel.JobSpec.model_validate(j), 0, device)
                            for n, j in mixed().items()], device, cores=2)
    assert apart.backend in ("interleaved", "processes")  # how long the jobs are decides
    assert apart.reason.startswith(apart.backend + ": ") and "differ in model" in apart.reason
    fusable = choose_backend([prepare(n, parallel.JobSpec.model_validate(j), 0, device)
                              for n, j in alike().items()], device, cores=2)
    assert fusable.backend in ("fused", "interleaved") and "fused step" in fusable.reason


def _fake(n: int, step_s: float, steps: int = 100) -> list[Prepared]:
    device = torch.device("cpu")
    base = prepare("a", parallel.JobSpec.model_validate(alike()["parity"]), 0, device, repeats=1)
    return [Prepared(f"j{i}", base.job, base.problem, base.model, step_s, steps)
            for i in range(n)]


@pytest.mark.parametrize("fused_s, cores, expected", [
    (0.1, 2, "fused"),        # fusing measured 10× faster per step
    (0.9, 2, "processes"),    # no gain from fusing, long jobs, two cores
    (0.9, 1, "interleaved"),  # no gain from fusing, one core
])
def test_auto_rule(monkeypatch, fused_s, cores, expected):
    jobs = _fake(4, step_s=0.25, steps=100)  # 4 × 25 s one after another
    monkeypatch.setattr(parallel, "time_fused_step", lambda prepared, device: fused_s)
    plan = choose_backend(jobs, torch.device("cpu"), cores=cores)
    assert plan.backend == expected and plan.reason.startswith(expected + ": ")


def test_auto_keeps_short_jobs_out_of_processes(monkeypatch):
    monkeypatch.setattr(parallel, "time_fused_step", lambda prepared, device: 1.0)
    plan = choose_backend(_fake(3, step_s=0.001, steps=50), torch.device("cpu"), cores=16)
    assert plan.backend == "interleaved" and "too little" in plan.reason


# ----------------------------------------------------------------------------- run files


def test_empty_jobs_is_an_error_with_an_example(tmp_path):
    spec = parse_run({"route": "parallel_training",
                      "hardware": {"accelerator": "cpu", "threads": 1}})
    with pytest.raises(ConfigError, match="needs at least one job") as err:
        run(spec, tmp_path / "run", progress=False)
    assert "jobs:" in str(err.value) and "trunk: cnn1d" in str(err.value)


def test_a_misspelt_job_key_is_named_with_its_near_miss():
    spec = parse_run({"route": "parallel_training",
                      "recipe": {"jobs": {"a": {"data": {"datset": "digits"}}}}})
    with pytest.raises(ConfigError, match=r"jobs\.a\.data\.datset.*Did you mean 'dataset'"):
        resolve(spec)


def test_bad_job_name_and_fused_misfit_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="cannot name a folder"):
        run_jobs({"a/b": {}}, tmp_path / "x", backend="sequential")
    with pytest.raises(ConfigError, match="differ in model.trunk"):
        run_jobs(mixed(), tmp_path / "y", backend="fused")


def test_the_example_run_file_holds_three_unrelated_jobs():
    path = Path(parallel.__file__).parents[2] / "examples" / "parallel_training.yaml"
    spec = resolve(load_run_file(path)).spec
    jobs = spec.recipe["jobs"]
    assert len(jobs) == 3
    assert len({j["model"]["trunk"] for j in jobs.values()}) == 3
    assert len({j["data"]["task"] for j in jobs.values()}) == 3
