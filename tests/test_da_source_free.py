"""Domain Adaptation without source data (SHOT) and with a new label set, end to end.

Known answers on built-in digits (source upright, target rotated): SHOT beats the source-only
model, and loses that edge when its pseudo-label and diversity terms are removed; the adapt stage
never receives source data. A new head on a source-trained, aligned trunk beats the same network
trained from scratch on a few target labels of another label set. Bad input is refused with one
clear message each. Every run uses one torch thread and no report (the report is not under test).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import summary_dict
from tests.test_routes_known_answers import directions, quadrant, save, xor
from tlroutes.config import DataSpec, load_run_file, parse_run
from tlroutes.data.load import load_problem
from tlroutes.demo import quick_spec
from tlroutes.errors import ConfigError, DataError
from tlroutes.objectives.source_free import SHOTLoss
from tlroutes.routes.da_variants.source_free import SHOTStep
from tlroutes.runner import run
from tlroutes.train.engine import Trainer

pytestmark = pytest.mark.usefixtures("one_thread", "no_report")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def no_report(monkeypatch):
    """Skip the run report (matplotlib, about a second a run): these tests read the summary."""
    monkeypatch.setattr("tlroutes.runner.build_report", lambda *args, **kwargs: None,
                        raising=False)


def source_free(seed: int = 0, **fields) -> dict:
    """SHOT on digits: upright source, target rotated by 35°; ``fields`` replace blocks."""
    spec = {
        "route": "domain_adaptation", "seed": seed,
        "constraints": {"source_data": False},
        "hardware": {"accelerator": "cpu", "threads": 1},
        "source": {"dataset": "digits", "task": "digit"},
        "target": {"dataset": "digits", "task": "digit", "shift": {"rotation": 35}},
        "model": {"trunk": "cnn2d"},
        "source_training": {"epochs": 5, "lr": 0.003},
        "target_training": {"epochs": 10, "lr": 0.003},
    }
    spec.update(fields)
    return spec


def tiny(**fields) -> dict:
    """A source-free run of a few hundred samples and one epoch a stage (seconds)."""
    return source_free(**{
        "source": {"dataset": "digits", "task": "digit", "n": 300},
        "target": {"dataset": "digits", "task": "digit", "n": 300, "shift": {"rotation": 35}},
        "model": {"trunk": "cnn2d", "trunk_args": {"channels": [8, 16]}},
        "source_training": {"epochs": 1}, "target_training": {"epochs": 1}, **fields})


def go(tmp_path: Path, name: str, spec: dict) -> dict:
    return summary_dict(run(parse_run(spec), tmp_path / name, progress=False))


# ------------------------------------------------------------------- SHOT's known answer

SHOT_MEAN_GAIN = 0.18
"""Mean test-accuracy gain over source-only that SHOT must reach on seeds 0-2 (see below)."""
SHOT_MIN_GAIN = 0.05
"""The gain every one of those seeds must reach."""
ABLATION = {"beta": 0.0, "diversity": False}
"""SHOT without its pseudo-label term and its diversity term: plain entropy minimisation."""


def gains(tmp_path: Path, seeds: list[int], variant_args: dict | None = None) -> list[float]:
    out = []
    for seed in seeds:
        spec = source_free(seed, recipe={"variant_args": variant_args or {}})
        out.append(go(tmp_path, f"seed-{seed}", spec)["gain"])
    return out


def test_shot_beats_the_source_only_model_on_one_seed(tmp_path):
    """Seed 0 of the 3-seed check below: SHOT gains 0.244 (0.650 vs 0.406); without the
    pseudo-label and diversity terms 0.103, under the 0.17 asked here."""
    assert gains(tmp_path, [0])[0] >= 0.17


@pytest.mark.slow
def test_shot_beats_the_source_only_model_on_three_seeds(tmp_path):
    """Digits rotated by 35°, cnn2d, 5 source epochs, 10 adapt epochs at lr 0.003, selection
    by IM (label-free). Measured on seeds 0-2: gains 0.244, 0.094, 0.397 (mean 0.245; source-only
    0.406, 0.333, 0.228). Margins: every seed >= 0.05 (the smallest, 0.094, halved) and the mean
    >= 0.18, above the ablation's mean (next test) and 0.065 under SHOT's."""
    g = gains(tmp_path, [0, 1, 2])
    assert min(g) >= SHOT_MIN_GAIN, g
    assert sum(g) / 3 >= SHOT_MEAN_GAIN, g


@pytest.mark.slow
def test_shot_without_pseudo_labels_and_diversity_falls_short(tmp_path):
    """The same runs with beta 0 and no diversity term (entropy minimisation alone): gains
    0.103, 0.050, 0.222 (mean 0.125), so the check above fails on its mean: the two terms are
    what earn SHOT its margin."""
    g = gains(tmp_path, [0, 1, 2], ABLATION)
    assert sum(g) / 3 < SHOT_MEAN_GAIN, g


# ------------------------------------------------------------------ the source-free contract


def test_adapt_stage_receives_target_batches_only(tmp_path, monkeypatch):
    """The adapt stage's only stream is the target's, its ``y`` are positions (no labels), and
    every stage after the source one is given no source tensor."""
    seen = {}
    fit = Trainer.fit

    def spy(self, stage):
        seen[stage.name] = {k: (s.x, s.y) for k, s in stage.streams.items()}
        return fit(self, stage)

    monkeypatch.setattr(Trainer, "fit", spy)
    summary = go(tmp_path, "run", tiny())
    assert list(seen) == ["source", "adapt"]
    assert list(seen["adapt"]) == ["target"]
    x, y = seen["adapt"]["target"]
    assert torch.equal(y.cpu(), torch.arange(len(y)))  # positions, not labels
    source_x = seen["source"]["train"][0]
    assert not (x.shape == source_x.shape and torch.equal(x, source_x))
    assert summary["variant"] == "source_free"
    assert summary["source_data_read_while_adapting"] is False
    assert summary["baseline_kind"] == "source_only"


def test_shot_step_refuses_a_source_batch():
    model = torch.nn.Module()
    step = SHOTStep(model, SHOTLoss(), samples=4)  # type: ignore[arg-type]
    batch = {"target": (torch.zeros(2, 1), torch.arange(2)),
             "source": (torch.zeros(2, 1), torch.zeros(2))}
    with pytest.raises(ConfigError, match="may only read 'target'"):
        step(batch)


def test_a_finished_runs_model_is_adapted_without_source_data(tmp_path):
    """``source: null`` with ``variant_args.source_model``: the first run's model, loaded, gives
    the same source-only accuracy (same target split, same weights) and is adapted."""
    first = go(tmp_path, "first", tiny())
    spec = tiny(source=None, recipe={"variant_args": {"source_model": str(tmp_path / "first")}})
    second = go(tmp_path, "second", spec)
    assert second["baseline"]["accuracy"] == pytest.approx(first["baseline"]["accuracy"])
    assert second["source_model"].startswith("loaded from")
    assert second["variant"] == "source_free"


def test_an_interrupted_adaptation_resumes_with_its_pseudo_labels(tmp_path, monkeypatch):
    """Stopped after the adapt stage's second epoch and resumed, the run ends bit-identical to
    one never stopped: the pseudo-labels are a buffer of the step, so the checkpoint holds the
    ones the next epoch trains on (recomputing them from the restored weights would do too, but
    only because the clustering is deterministic; the buffer does not depend on that)."""
    from safetensors.torch import load_file

    import tlroutes.train.engine as engine

    spec = tiny(target_training={"epochs": 3})
    whole = go(tmp_path, "whole", spec)
    save = engine.save_checkpoint

    def stop_after_second_adapt_epoch(folder, epoch, *args, **kwargs):
        out = save(folder, epoch, *args, **kwargs)
        if Path(folder).name == "adapt" and epoch == 1:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(engine, "save_checkpoint", stop_after_second_adapt_epoch)
    with pytest.raises(KeyboardInterrupt):
        go(tmp_path, "cut", spec)
    monkeypatch.setattr(engine, "save_checkpoint", save)
    resumed = summary_dict(run(parse_run(spec), tmp_path / "cut", resume=True, progress=False))
    a = load_file(tmp_path / "whole" / "checkpoints" / "adapt" / "final.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "adapt" / "final.safetensors")
    assert a.keys() == b.keys() and "pseudo" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["metrics"] == whole["metrics"]


# ------------------------------------------------------------------------------- bad input


def test_no_source_data_and_no_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs a trained source model.*neither source data"):
        go(tmp_path, "run", tiny(source=None))


@pytest.mark.parametrize(("recipe", "match"), [
    ({"variant_args": {"source_model": "no/such/run"}}, "does not exist"),
    ({"variant_args": {"beta": -1}}, "beta"),
    ({"variant_args": {"betta": 0.3}}, "betta"),
    ({"selection": "source_accuracy"}, "does not have"),
    ({"target_labels": 0.5}, "uses no target labels"),
    ({"variant": "partial"}, "source_free"),
])
def test_bad_source_free_recipes_are_refused(tmp_path, recipe, match):
    with pytest.raises(ConfigError, match=match):
        go(tmp_path, "run", tiny(recipe=recipe))


def test_a_source_model_that_does_not_fit_is_named(tmp_path):
    go(tmp_path, "first", tiny())
    other = tiny(source=None, model={"trunk": "cnn2d", "trunk_args": {"channels": [8, 24]}},
                 recipe={"variant_args": {"source_model": str(tmp_path / "first")}})
    with pytest.raises(ConfigError, match="does not fit this run's model.*shape differs"):
        go(tmp_path, "second", other)


def _npz(path: Path, labels: list[str], top: int) -> Path:
    """A tabular .npz declaring ``labels`` whose splits hold the classes 0..``top``."""
    y = np.arange(top + 1).repeat(3)
    x = np.random.default_rng(0).normal(size=(len(y), 4)).astype(np.float32)
    np.savez(path, x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y,
             labels=np.array(labels))
    return path


def test_a_declared_label_list_that_contradicts_the_labels_present_says_which(tmp_path):
    # a class present in the data that the list does not declare: the value and the list
    with pytest.raises(DataError, match=r"names 2 classes \(0: a, 1: b\) but the data hold "
                                        r"class index 2 .*2: 3 in train, 3 in val, 3 in test"):
        load_problem(DataSpec(dataset=str(_npz(tmp_path / "short.npz", ["a", "b"], top=2))), 0,
                     "t")
    # a name declared twice would merge two classes when label sets are matched by name
    with pytest.raises(DataError, match="repeats names \\('a' at positions 0, 2\\)"):
        twice = _npz(tmp_path / "twice.npz", ["a", "b", "a"], top=2)
        load_problem(DataSpec(dataset=str(twice)), 0, "t")


def test_the_source_free_example_runs_quick(tmp_path):
    """``examples/domain_adaptation_source_free.yaml`` as ``tlroutes demo --quick`` runs it."""
    spec = quick_spec(load_run_file(EXAMPLES / "domain_adaptation_source_free.yaml"))
    spec = spec.model_copy(update={"hardware": spec.hardware.model_copy(
        update={"accelerator": "cpu", "threads": 1})})
    summary = summary_dict(run(spec, tmp_path / "example", progress=False))
    assert summary["variant"] == "source_free"
    assert summary["method"] == "shot"
    assert summary["gain"] > 0, summary["gain"]


# ------------------------------------------------------------------ supervised, new label set

NEW_LABEL_GAIN = 0.15
"""Test-accuracy gain over scratch that a new head on the source-trained trunk must reach."""


def new_label_set(tmp_path: Path, seed: int, scrambled: bool = False, target_training=None,
                  **recipe) -> dict:
    """Source: the quadrant of (u1·x, u2·x), x Gaussian in 20 dimensions (labels q0-q3, 1000
    samples). Target: the XOR of the same two signs (labels same/differ: another label set),
    its inputs moved by 3 along a third direction w (the domain shift), 400 training samples of
    which 20% labelled. ``scrambled``: the source labels permuted (nothing to carry over)."""
    rng = np.random.default_rng(seed)
    q = directions(rng, 3)
    u, w = q[:, :2], q[:, 2]

    def draw(n: int, label, offset: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 20))
        return x + offset * w, label(x)

    source = [draw(n, lambda x: quadrant(x, u), 0.0) for n in (1000, 300, 300)]
    target = [draw(n, lambda x: xor(x, u), 3.0) for n in (400, 200, 1000)]
    if scrambled:
        source = [(x, np.random.default_rng(99).permutation(y)) for x, y in source]
    tag = f"{seed}{'-scrambled' if scrambled else ''}"
    spec = {
        "route": "domain_adaptation", "seed": seed,
        "hardware": {"accelerator": "cpu", "threads": 1},
        "source": {"dataset": save(tmp_path / f"source-{tag}.npz", source,
                                   ["q0", "q1", "q2", "q3"])},
        "target": {"dataset": save(tmp_path / f"target-{tag}.npz", target,
                                   ["same", "differ"])},
        "model": {"trunk": "mlp", "trunk_args": {"width": 128}},
        "source_training": {"epochs": 20, "batch_size": 32},
        "target_training": target_training or {"epochs": 10, "batch_size": 32},
        "recipe": {"target_labels": 0.2, "method": "dann", "selection": "target_accuracy",
                   **recipe},
    }
    return go(tmp_path, f"run-{tag}", spec)


def test_a_new_label_set_beats_scratch_when_the_source_features_help(tmp_path):
    """80 labelled target samples of a label set the source lacks: from scratch the XOR stays
    near chance; the source-trained trunk already separates the quadrants.

    Measured (seeds 0-2, target test n=1000): adapted 0.852, 0.821, 0.882 against scratch
    0.547, 0.563, 0.574 (gain +0.305, +0.258, +0.308); fine-tuning without alignment 0.842,
    0.850, 0.869 (alignment adds -0.03..+0.01 here: the trunk's source features are what
    help). The bound 0.15 is about half the smallest gain. With the source labels scrambled
    (nothing to carry over, next test) the gain falls under it.
    """
    summary = new_label_set(tmp_path, seed=0)
    assert summary["variant"] == "new_label_set"
    assert summary["baseline_kind"] == "target_supervised"
    assert "fine_tuning" in summary["also"]
    assert summary["gain"] > NEW_LABEL_GAIN, summary["gain"]


@pytest.mark.slow
def test_a_new_label_set_gains_nothing_from_a_scrambled_source(tmp_path):
    """The control: the same target, the source's labels permuted. Measured gains over scratch
    +0.017, -0.031, -0.019 (seeds 0-2), all under the bound the real source clears by 0.1+."""
    assert new_label_set(tmp_path, seed=0, scrambled=True)["gain"] < NEW_LABEL_GAIN


def test_a_new_label_set_takes_a_budget_in_steps(tmp_path):
    """With ``steps:`` the adaptation, fine-tuning and scratch stages each take that many
    steps (the fine-tuning and scratch comparisons stay on the same budget)."""
    new_label_set(tmp_path, seed=0, target_training={"steps": 12, "val_every_steps": 6,
                                                     "batch_size": 32})
    records = [json.loads(line) for line in
               (tmp_path / "run-0" / "metrics.jsonl").read_text().splitlines()]
    last = {}
    for record in records:
        last[record["stage"]] = record.get("step", last.get(record["stage"]))
    assert {name: last[name] for name in ("adapt", "fine_tuning", "target_supervised")} == {
        "adapt": 12, "fine_tuning": 12, "target_supervised": 12}, last


@pytest.mark.parametrize(("recipe", "match"), [
    ({"method": "cdan"}, "compares class predictions.*Use one of: .*dann"),
    ({"method": "source_only"}, "has no alignment loss"),
    ({"selection": "source_accuracy"}, "replaces"),
    ({"variant_args": {"beta": 0.3}}, "takes no variant_args"),
])
def test_bad_new_label_set_recipes_are_refused(tmp_path, recipe, match):
    with pytest.raises(ConfigError, match=match):
        new_label_set(tmp_path, seed=0, **recipe)


def test_the_plan_recommends_feature_alignment_for_a_new_label_set():
    """``route: auto`` must not plan a method that variant new_label_set refuses (MCC, the
    closed case's advice, reads class predictions)."""
    from tlroutes.problem import Domain, Problem, Split, Task
    from tlroutes.routes.domain_adaptation import recommend

    def problem(labels: tuple[str, ...]) -> Problem:
        split = Split(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
        return Problem("p", Task("classification", labels), Domain("d", "tabular", (2,)),
                       split, split, split)

    same = recommend({"source": problem(("a", "b")), "target": problem(("a", "b"))}, None, [])
    assert same[0]["method"] == "mcc"
    new = recommend({"source": problem(("a", "b")), "target": problem(("a", "c"))}, None, [])
    assert new[0]["method"] == "dann" and "label sets differ" in new[1]["method"]
