"""hardware.precision: every precision the CPU runs trains the routes end to end, evaluates as it
trains (Fabric's autocast, the weights' dtype) and saves and predicts in that dtype; what a device
cannot run is refused before anything trains."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import tlroutes
from tlroutes.errors import ConfigError
from tlroutes.objectives.tasks import task_metrics
from tlroutes.train.engine import evaluate_split
from tlroutes.train.hardware import Hardware, make_fabric
from tlroutes.train.precision import check_precision, precision_plugin, precision_problem


@pytest.fixture
def no_report(monkeypatch):
    """The report (matplotlib) takes most of a tiny run's time and reads no precision."""
    monkeypatch.setattr("tlroutes.runner.build_report", lambda *a, **k: None, raising=False)


pytestmark = pytest.mark.usefixtures("one_thread", "no_report")

#: Every precision of the run file besides the default, all of which the CPU runs.
CPU_PRECISIONS = ["64-true", "bf16-mixed", "16-mixed", "bf16-true"]
#: The dtype the weights train and are saved in.
WEIGHTS = {"64-true": torch.float64, "bf16-true": torch.bfloat16,
           "bf16-mixed": torch.float32, "16-mixed": torch.float32}

TRAIN = {"epochs": 1, "batch_size": 32}
MODEL = {"trunk": "mlp", "trunk_args": {"width": 16}}
ROUTES = {
    # sequential: a source stage, then the target's
    "task_fine_tuning": {
        "source": {"dataset": "digits", "n": 100, "classes": [0, 1, 2, 3, 4]},
        "target": {"dataset": "digits", "n": 100, "classes": [5, 6, 7, 8, 9]},
        "source_training": TRAIN, "target_training": TRAIN, "baseline": True},
    # simultaneous: one joint stage (a weighting's own backward) after single-task baselines
    "multi_task_learning": {
        "problems": {"digit": {"dataset": "digits", "task": "digit", "n": 100},
                     "properties": {"dataset": "digits", "task": "properties", "n": 100}},
        "training": TRAIN, "baseline": True},
    # the feature cache of a frozen trunk no stage has trained (no source), then a head
    "task_adaptation": {
        "source": None, "target": {"dataset": "digits", "task": "properties", "n": 100},
        "target_training": TRAIN, "baseline": True},
    # source and target at once through an adversarial objective
    "domain_adaptation": {
        "source": {"dataset": "digits", "task": "digit", "n": 100},
        "target": {"dataset": "digits", "task": "digit", "n": 100, "shift": {"rotation": 35}},
        "source_training": TRAIN, "target_training": TRAIN, "recipe": {"method": "dann"}},
}


def spec(route: str, precision: str, **extra) -> dict:
    return {"route": route, "model": MODEL, **ROUTES[route], **extra,
            "hardware": {"precision": precision, "accelerator": "cpu", "threads": 1}}


def floating_dtypes(path) -> set[torch.dtype]:
    return {w.dtype for w in load_file(path).values() if w.is_floating_point()}


# Multi-Task Learning refuses 16-mixed up front (test_multi_task_learning_refuses_16_mixed_...).
@pytest.mark.parametrize(("route", "precision"), [
    (r, p) for r in ROUTES for p in CPU_PRECISIONS
    if (r, p) != ("multi_task_learning", "16-mixed")])
def test_each_route_runs_end_to_end_in_each_precision(tmp_path, route, precision):
    summary = tlroutes.run(spec(route, precision), tmp_path / "run", progress=False)
    figures = [v for v in summary.metrics.values() if isinstance(v, float)]
    assert figures and all(math.isfinite(v) for v in figures), summary.metrics
    if summary.baseline is not None:
        assert all(math.isfinite(v) for v in summary.baseline.values() if isinstance(v, float))
    # saved in the dtype it trained in, and said so
    assert floating_dtypes(tmp_path / "run" / "model.safetensors") == {WEIGHTS[precision]}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["precision"] == precision
    assert manifest["weights_dtype"] == str(WEIGHTS[precision]).removeprefix("torch.")


@pytest.mark.parametrize("precision", CPU_PRECISIONS)
def test_the_loaded_model_predicts_the_test_metrics_of_the_summary(tmp_path, precision):
    # Enough training for the predictions to depend on the weights; `tlroutes.load` rebuilds the
    # model in the saved dtype and predicts under the run's autocast, as the run evaluated.
    run = spec("task_fine_tuning", precision, baseline=False,
               target_training={"epochs": 4, "batch_size": 16, "lr": 0.01})
    summary = tlroutes.run(run, tmp_path / "run", progress=False)
    predictor = tlroutes.load(tmp_path / "run")
    assert next(predictor.model.parameters()).dtype == WEIGHTS[precision]
    test = predictor.split("test")
    outputs = predictor.outputs(test.x)
    assert outputs.dtype == (torch.float64 if precision == "64-true" else torch.float32)
    task = predictor.tasks[predictor.heads[0]]
    assert task_metrics(task, outputs, test.y) == summary.metrics
    assert summary.metrics["accuracy"] > 0.3  # learnt something: the predictions mean something
    # Exported graphs are float32 whatever the training precision (inputs as preprocessed).
    from tlroutes.use.export import export_model

    graph = torch.jit.load(str(export_model(predictor, format="torchscript")))
    x = test.x[:8].float()
    exported = graph(x)
    assert exported.dtype == torch.float32
    if precision in ("64-true", "bf16-true"):  # weights as trained, the forward in float32
        reference = predictor.model.float()(x, head=predictor.heads[0])
        assert torch.allclose(exported, reference, atol=1e-5)


def test_a_lazily_read_image_folder_trains_in_bf16(tmp_path):
    from tlroutes.data.digit_images import write_digit_images

    folder = write_digit_images(tmp_path / "digits", n=60, size=8)
    run = {"route": "task_fine_tuning", "source": None, "baseline": False,
           "target": {"dataset": str(folder)}, "model": MODEL,
           "target_training": TRAIN, "hardware": {"precision": "bf16-true", "threads": 1,
                                                  "workers": 0, "accelerator": "cpu"}}
    summary = tlroutes.run(run, tmp_path / "run", progress=False)
    assert math.isfinite(summary.metrics["accuracy"])
    assert floating_dtypes(tmp_path / "run" / "model.safetensors") == {torch.bfloat16}


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_parallel_training_fused_jobs_train_test_and_save_in_the_run_dtype(tmp_path, precision):
    job = {"model": MODEL, "training": {"epochs": 2, "batch_size": 32}}
    run = {"route": "parallel_training",
           "recipe": {"backend": "fused", "jobs": {
               name: {**job, "data": {"dataset": "digits", "task": "digit", "n": 100,
                                      "seed": seed}} for name, seed in (("a", 1), ("b", 2))}},
           "hardware": {"precision": precision, "threads": 1, "accelerator": "cpu"}}
    summary = tlroutes.run(run, tmp_path / "run", progress=False)
    assert summary.details["backend"] == "fused" and summary.metrics["jobs_ok"] == 2
    for name in ("a", "b"):
        assert floating_dtypes(tmp_path / "run" / "jobs" / name / "model.safetensors") == {
            WEIGHTS[precision]}


# -- evaluation goes through the run's precision ---------------------------------------------
class Probe(nn.Module):
    """A linear layer that records whether its forward ran under autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.autocast: list[bool] = []

    def forward(self, x):
        self.autocast.append(torch.is_autocast_enabled(x.device.type))
        return self.linear(x)


def test_mixed_precision_evaluates_under_autocast_with_float32_outputs():
    model, x = Probe(), torch.randn(10, 4)
    out = evaluate_split(model, model, x, precision=precision_plugin("bf16-mixed", "cpu"))
    assert model.autocast and all(model.autocast)
    assert out.dtype == torch.float32  # the bf16 logits, cast for the metrics
    # the same numbers as the forward under autocast itself, in bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model.linear(x.bfloat16())
    assert torch.equal(out, expected.float())
    out = evaluate_split(model, model, x, precision=precision_plugin("16-mixed", "cpu"))
    assert torch.equal(out, torch.autocast("cpu", dtype=torch.float16)(model.linear)(x.half())
                       .float())


def test_true_precision_evaluates_in_the_weights_dtype():
    model = Probe().to(torch.bfloat16)
    out = evaluate_split(model, model, torch.randn(10, 4),
                         precision=precision_plugin("bf16-true", "cpu"))
    assert out.dtype == torch.float32 and not any(model.autocast)
    # A model no stage has cast yet is evaluated in its own dtype, as before.
    plain = Probe()
    assert evaluate_split(plain, plain, torch.randn(10, 4),
                          precision=precision_plugin("64-true", "cpu")).dtype == torch.float32


def test_16_mixed_on_the_cpu_is_float16_not_bfloat16():
    # Fabric alone would train "16-mixed" on the CPU as "bf16-mixed" with a warning.
    fabric = make_fabric(Hardware(accelerator="cpu", precision="16-mixed", threads=1))
    with fabric.autocast():
        out = nn.Linear(4, 3)(torch.randn(2, 4))
    assert out.dtype == torch.float16
    assert fabric.strategy.precision.scaler is not None  # float16 gradients are scaled


# -- refused up front ------------------------------------------------------------------------
def test_multi_task_learning_refuses_16_mixed_up_front(tmp_path):
    with pytest.raises(ConfigError, match=r"Multi-Task Learning cannot train in hardware\."
                       r"precision '16-mixed'.*use 'bf16-mixed'"):
        tlroutes.run(spec("multi_task_learning", "16-mixed"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_what_a_device_cannot_run_is_named_with_what_to_use():
    assert precision_problem("64-true", "cpu") is None
    for precision in CPU_PRECISIONS:
        assert precision_problem(precision, "cpu") is None
    with pytest.raises(ConfigError, match=r"'64-true' needs float64.*MPS.*use '32-true'"):
        check_precision("64-true", "mps")
    with pytest.raises(ConfigError, match="precision '8-true' is unknown; use one of"):
        check_precision("8-true", "cpu")


def test_an_unknown_precision_in_a_run_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="precision"):
        tlroutes.run(spec("task_fine_tuning", "16-true"), tmp_path / "run", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", CPU_PRECISIONS)
def test_cuda_runs_each_precision_or_refuses_it_up_front(tmp_path, precision):
    run = spec("task_fine_tuning", precision)
    run["hardware"] = {"precision": precision, "accelerator": "cuda"}
    problem = precision_problem(precision, "cuda")
    if problem is not None:  # bfloat16 on a GPU older than Ampere
        with pytest.raises(ConfigError, match="use '16-mixed'"):
            tlroutes.run(run, tmp_path / "run", progress=False)
        return
    summary = tlroutes.run(run, tmp_path / "run", progress=False)
    assert math.isfinite(summary.metrics["accuracy"])
    assert floating_dtypes(tmp_path / "run" / "model.safetensors") == {WEIGHTS[precision]}
    predictor = tlroutes.load(tmp_path / "run", device="cuda")
    test = predictor.split("test")
    task = predictor.tasks[predictor.heads[0]]
    assert task_metrics(task, predictor.outputs(test.x), test.y) == summary.metrics


def test_a_run_leaves_evaluation_in_float32_for_what_follows(tmp_path):
    tlroutes.run(spec("task_adaptation", "bf16-mixed"), tmp_path / "run", progress=False)
    model = Probe()
    evaluate_split(model, model, torch.randn(4, 4))
    assert model.autocast == [False]
