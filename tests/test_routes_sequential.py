"""The four sequential routes end to end on tiny built-in problems, with known answers."""

from __future__ import annotations

import statistics

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import summary_dict
from tlroutes.config import parse_run
from tlroutes.errors import ConfigError
from tlroutes.objectives.alignment import list_alignments
from tlroutes.runner import run

DIGITS = {"dataset": "digits", "n": 200}
QUICK = {"epochs": 2, "batch_size": 32}


def _run(tmp_path, name="r", **fields):
    spec = {"seed": 1, "source": DIGITS, "target": DIGITS, "model": {"trunk": "mlp"},
            "source_training": QUICK, "target_training": QUICK,
            "hardware": {"accelerator": "cpu"}, **fields}
    out = tmp_path / name
    return run(parse_run(spec), out, progress=False), out


def _part(weights: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize("schedule", ["full", "lp_ft", "gradual", "linear_probe"])
def test_task_fine_tuning_schedules(tmp_path, schedule):
    summary, out = _run(tmp_path, route="task_fine_tuning",
                        target={**DIGITS, "classes": [5, 6, 7, 8, 9]},
                        recipe={"schedule": schedule, "probe_epochs": 1})
    """Known answer: only the linear probe leaves the carried-over trunk and stem bit-identical;
    every other schedule fine-tunes them. (Checked: with ``task_fine_tuning.freeze`` patched
    to a no-op the linear_probe case fails.)"""
    summary = summary_dict(summary)
    assert summary["route"] == "task_fine_tuning" and summary["schedule"] == schedule
    assert 0 <= summary["metrics"]["accuracy"] <= 1 and summary["gain"] is not None
    source = load_file(out / "checkpoints" / "source" / "final.safetensors")
    final = load_file(out / "model.safetensors")
    for part in ("trunk.", "stems."):
        kept = _same(_part(source, "model." + part), _part(final, part))
        assert kept == (schedule == "linear_probe"), (schedule, part)


def test_lp_ft_probe_changes_only_the_head(tmp_path):
    _, out = _run(tmp_path, route="task_fine_tuning", recipe={"schedule": "lp_ft",
                                                              "probe_epochs": 2})
    source = load_file(out / "checkpoints" / "source" / "final.safetensors")
    probe = load_file(out / "checkpoints" / "probe" / "final.safetensors")
    for part in ("model.trunk.", "model.stems."):
        assert _same(_part(source, part), _part(probe, part)), f"{part} changed in the probe"
    finetuned = load_file(out / "model.safetensors")
    assert not _same(_part(probe, "model.trunk."), _part(finetuned, "trunk."))


@pytest.mark.parametrize("regularizer", ["l2sp", "bss"])
def test_task_fine_tuning_regularizers_run_and_log_their_penalty(tmp_path, regularizer):
    summary, out = _run(tmp_path, route="task_fine_tuning", recipe={"regularizer": regularizer})
    text = (out / "metrics.jsonl").read_text()
    assert "train_penalty" in text


def test_discriminative_learning_rates_reach_the_optimizer(tmp_path):
    summary, out = _run(tmp_path, route="task_fine_tuning",
                        recipe={"lr_multipliers": {"trunk": 0.0, "stems": 0.0}},
                        target_training={"epochs": 1, "batch_size": 32, "scheduler": "constant"})
    before = load_file(out / "checkpoints" / "source" / "final.safetensors")
    after = load_file(out / "model.safetensors")
    assert _same(_part(before, "model.trunk."), _part(after, "trunk.")), "lr 0 must not move it"


def test_lora_fine_tuning_keeps_the_trunk(tmp_path):
    pytest.importorskip("peft")
    summary, out = _run(tmp_path, route="task_fine_tuning", recipe={"lora_rank": 2})
    before = _part(load_file(out / "checkpoints" / "source" / "final.safetensors"), "model.trunk.")
    after = _part(load_file(out / "model.safetensors"), "trunk.")
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora_" not in k}
    assert _same(before, base)
    assert any("lora_B" in k for k in after)


def test_task_adaptation_keeps_the_frozen_trunk_bit_identical(tmp_path):
    summary, out = _run(tmp_path, route="task_adaptation", target={**DIGITS, "task": "properties"})
    assert summary.primary_metric == "f1" and summary.details["cached_features"]
    source = load_file(out / "checkpoints" / "source" / "final.safetensors")
    model = load_file(out / "model.safetensors")
    assert _same(_part(source, "model.trunk."), _part(model, "trunk."))
    assert _same(_part(source, "model.stems."), _part(model, "stems."))


def test_task_adaptation_without_cache_and_with_finetuning(tmp_path):
    summary, out = _run(tmp_path, route="task_adaptation",
                        target={**DIGITS, "task": "position", "canvas": 16, "n": 120},
                        source={**DIGITS, "canvas": 16},
                        recipe={"cache_features": False, "finetune_epochs": 1})
    assert summary.primary_metric == "mse" and not summary.details["cached_features"]
    assert (out / "checkpoints" / "finetune" / "done.json").is_file()


@pytest.mark.parametrize("method", ["source_only", *list_alignments()])
def test_domain_adaptation_methods(tmp_path, method):
    summary, out = _run(tmp_path, route="domain_adaptation",
                        target={**DIGITS, "shift": {"rotation": 30}},
                        recipe={"method": method})
    assert summary.baseline_kind == "source_only"
    assert summary.details["selection_uses_target_labels"] is False
    if method == "source_only":
        assert summary.gain == 0
    else:
        assert "train_transfer_loss" in (out / "metrics.jsonl").read_text()


def test_supervised_domain_adaptation_reports_target_supervised(tmp_path):
    summary, _ = _run(tmp_path, route="domain_adaptation",
                      target={**DIGITS, "shift": {"inversion": 1}},
                      recipe={"method": "coral", "target_labels": 0.5,
                              "selection": "target_accuracy"})
    assert summary.baseline_kind == "target_supervised"
    assert set(summary.baselines) == {"source_only", "target_supervised"}
    assert summary.details["selection_uses_target_labels"] is True


def test_modality_transfer_trains_only_stem_norms_positions_and_head(tmp_path):
    summary, out = _run(tmp_path, route="modality_transfer",
                        target={"dataset": "mnist1d", "task": "properties", "n": 150},
                        model={"trunk": "transformer", "trunk_args": {"dim": 16, "depth": 1,
                                                                      "heads": 2}})
    assert "control" in summary.details
    source = _part(load_file(out / "checkpoints" / "source" / "final.safetensors"),
                   "model.trunk.")
    model = _part(load_file(out / "model.safetensors"), "trunk.")
    moved = sorted(k for k in source if not source[k].equal(model[k]))
    assert moved and all("norm" in k or "pos_embed" in k for k in moved), moved


def test_a_route_that_does_not_fit_names_the_one_that_does(tmp_path):
    # task kinds are a fact: refused
    with pytest.raises(ConfigError, match="task_adaptation"):
        _run(tmp_path, route="task_fine_tuning", target={**DIGITS, "task": "properties"})
    # a measured domain shift is evidence: the declared route runs, with a warning naming the
    # route the measurement fits
    with pytest.warns(UserWarning, match="Domain Adaptation would fit the measurement"):
        _run(tmp_path, "blurred", route="task_fine_tuning",
             target={**DIGITS, "shift": {"blur": 1.0}})


def test_domain_adaptation_refuses_different_label_sets(tmp_path):
    with pytest.raises(ConfigError, match="label"):
        _run(tmp_path, route="domain_adaptation",
             target={**DIGITS, "task": "parity", "shift": {"rotation": 20}})


def test_unknown_recipe_key_names_the_route_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'method'"):
        _run(tmp_path, route="domain_adaptation", recipe={"methd": "dann"})


def test_seeds_report_mean_and_spread(tmp_path):
    summary, out = _run(tmp_path, route="task_fine_tuning", seeds=2,
                        source_training={"epochs": 1}, target_training={"epochs": 1})
    assert summary.seeds == [1, 2] and len(summary.per_seed) == 2
    accs = [s.metrics["accuracy"] for s in summary.per_seed]
    assert summary.metrics["accuracy"] == pytest.approx(sum(accs) / 2)
    gains = [s.gain for s in summary.per_seed]
    assert summary.gain == pytest.approx(statistics.fmean(gains))
    assert summary.gain_std == pytest.approx(statistics.stdev(gains))
    assert (out / "seed-2" / "summary.json").is_file()


def test_pretrained_weights_that_do_not_fit_name_the_keys(tmp_path):
    from safetensors.torch import save_file

    save_file({"layers.0.weight": torch.zeros(3, 3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(Exception, match="layers.0.weight"):
        _run(tmp_path, route="task_fine_tuning",
             model={"trunk": "mlp", "weights": str(tmp_path / "w.safetensors")})
