"""Trunks, stems, heads and task objectives: shapes, gradients, errors, known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tlroutes.backbones import (
    create_head,
    create_stem,
    create_trunk,
    list_stems,
    list_trunks,
    stems_for,
    trunks_for,
)
from tlroutes.backbones.stems import auto_patch
from tlroutes.errors import ConfigError, DataError
from tlroutes.objectives.tasks import primary_metric, task_loss, task_metrics
from tlroutes.problem import Domain, Task

VOCAB = 30
DOMAINS = {
    "image": Domain("img", "image", (1, 8, 8)),
    "signal": Domain("sig", "signal", (2, 40)),
    "tabular": Domain("tab", "tabular", (5,)),
    "text": Domain("txt", "text", (12,)),
}
SMALL_TRUNKS = {
    "mlp": {"width": 16, "depth": 1},
    "cnn2d": {"channels": (8, 16)},
    "cnn1d": {"channels": (8, 16)},
    "transformer": {"dim": 16, "depth": 1, "heads": 2, "max_tokens": 64},
}


def sample(domain: Domain, batch: int = 4) -> torch.Tensor:
    if domain.modality == "text":
        return torch.randint(0, VOCAB, (batch, *domain.input_shape))
    return torch.randn(batch, *domain.input_shape)


def stem_kwargs(domain: Domain) -> dict:
    return {"vocab_size": VOCAB} if domain.modality == "text" else {}


SUPPORTED = [(m, t) for m in DOMAINS for t in SMALL_TRUNKS if t in trunks_for(m)]


def test_registry_lists_builtins():
    assert set(SMALL_TRUNKS) <= set(list_trunks())
    assert {"linear", "conv2d", "conv1d", "patch2d", "patch1d", "features", "embedding"} <= set(
        list_stems()
    )


def test_every_modality_reaches_the_vector_and_token_trunks():
    assert len(SUPPORTED) == 10  # 4 × (mlp, transformer) + image→cnn2d + signal→cnn1d
    assert {"mlp", "cnn2d", "transformer"} <= set(trunks_for("image"))
    assert {"mlp", "cnn1d", "transformer"} <= set(trunks_for("signal"))


@pytest.mark.parametrize(("modality", "trunk_name"), SUPPORTED)
def test_stem_and_trunk_give_pooled_features_and_backprop(modality, trunk_name):
    torch.manual_seed(0)
    domain = DOMAINS[modality]
    trunk = create_trunk(trunk_name, **SMALL_TRUNKS[trunk_name])
    stem = create_stem(domain, trunk, **stem_kwargs(domain))
    assert stem.input_kind == trunk.input_kind
    feats = trunk(stem(sample(domain)))
    assert feats.shape == (4, trunk.out_dim)
    feats.pow(2).sum().backward()
    for name, p in [*stem.named_parameters(), *trunk.named_parameters()]:
        assert p.grad is not None, name


@pytest.mark.parametrize(("modality", "trunk_name"), SUPPORTED)
def test_stem_rejects_wrong_per_sample_shape(modality, trunk_name):
    domain = DOMAINS[modality]
    trunk = create_trunk(trunk_name, **SMALL_TRUNKS[trunk_name])
    stem = create_stem(domain, trunk, **stem_kwargs(domain))
    wrong = torch.zeros(3, 7, 3, dtype=torch.long if modality == "text" else torch.float)
    expected = f"(B, {', '.join(map(str, domain.input_shape))})"
    with pytest.raises(DataError, match=domain.name) as info:
        stem(wrong)
    assert expected in str(info.value)
    assert "(B, 7, 3)" in str(info.value)


def test_shape_message_for_digits_domain():
    domain = Domain("digits", "image", (1, 8, 8))
    stem = create_stem(domain, create_trunk("cnn2d"))
    with pytest.raises(
        DataError, match=r"expects inputs of shape \(B, 1, 8, 8\), got \(B, 1, 40\)"
    ):
        stem(torch.zeros(2, 1, 40))


def test_unsupported_pair_names_trunks_that_work():
    with pytest.raises(ConfigError, match="Trunks that work for signal: ") as err:
        create_stem(DOMAINS["signal"], create_trunk("cnn2d"))
    named = str(err.value).split("Trunks that work for signal: ")[1]
    assert {"mlp", "cnn1d", "transformer"} <= {t.strip(" .") for t in named.split(",")}


def test_explicit_stem_kind_must_fit():
    trunk = create_trunk("transformer", **SMALL_TRUNKS["transformer"])
    with pytest.raises(ConfigError, match="Stems that fit: patch2d"):
        create_stem(DOMAINS["image"], trunk, kind="conv2d")
    with pytest.raises(ConfigError, match="Did you mean 'patch2d'"):
        create_stem(DOMAINS["image"], trunk, kind="patch2")


def test_text_stem_needs_vocab_size_and_integer_ids():
    trunk = create_trunk("transformer", **SMALL_TRUNKS["transformer"])
    with pytest.raises(ConfigError, match="vocab_size"):
        create_stem(DOMAINS["text"], trunk)
    stem = create_stem(DOMAINS["text"], trunk, vocab_size=VOCAB)
    with pytest.raises(DataError, match="integer token ids"):
        stem(torch.zeros(2, 12))


def test_bag_stem_ignores_padding():
    trunk = create_trunk("mlp", width=4, depth=1)
    stem = create_stem(DOMAINS["text"], trunk, vocab_size=VOCAB, padding_idx=0)
    ids = torch.tensor([[5] * 3 + [0] * 9])
    assert torch.allclose(stem(ids), stem.embed.weight[5].unsqueeze(0))


def test_unknown_argument_is_a_config_error():
    with pytest.raises(ConfigError, match="Did you mean 'width'"):
        create_trunk("mlp", widht=8)
    with pytest.raises(ConfigError, match="no argument 'patchsize'"):
        create_stem(DOMAINS["image"], create_trunk("transformer"), patchsize=2)


def test_unknown_trunk_suggests_the_nearest():
    with pytest.raises(ConfigError, match="Did you mean 'transformer'") as info:
        create_trunk("transformr")
    assert "cnn2d" in str(info.value)


def test_auto_patch_sizes():
    assert auto_patch((8, 8), 64) == 2
    assert auto_patch((28, 28), 64) == 4
    assert auto_patch((32, 32), 64) == 4
    assert auto_patch((40,), 64) == 2
    assert auto_patch((7, 7), 64) == 1  # prime side: one pixel per token still fits


def test_patch_stem_respects_trunk_max_tokens():
    trunk = create_trunk("transformer", dim=8, depth=1, heads=2, max_tokens=4)
    stem = create_stem(DOMAINS["image"], trunk)
    assert stem.patch == 4 and stem.num_tokens == 4
    with pytest.raises(ConfigError, match="max_tokens=4"):
        create_stem(DOMAINS["image"], trunk, patch=2)


def test_transformer_parameter_names():
    trunk = create_trunk("transformer", dim=8, depth=2, heads=2)
    names = [n for n, _ in trunk.named_parameters()]
    assert "pos_embed" in names and "cls_token" in names
    norms = [n for n, m in trunk.named_modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all("norm" in n for n in norms)
    mean = create_trunk("transformer", dim=8, depth=1, heads=2, pool="mean")
    assert mean.cls_token is None
    assert mean(torch.randn(3, 5, 8)).shape == (3, 8)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_cnn_norms(norm):
    trunk = create_trunk("cnn2d", channels=(8, 12), norm=norm)
    assert trunk(torch.randn(2, 8, 5, 5)).shape == (2, 12)
    with pytest.raises(ConfigError, match="norm"):
        create_trunk("cnn1d", norm="layer")


def test_heads():
    task = Task("classification", ("a", "b", "c"))
    head = create_head(task, 8)
    assert isinstance(head, nn.Linear) and head.out_features == 3
    deep = create_head(task, 8, hidden=5, dropout=0.1)
    assert deep(torch.randn(2, 8)).shape == (2, 3)
    assert deep.out.in_features == 5


# -- task objectives -------------------------------------------------------------------------

CLS = Task("classification", ("a", "b", "c"))
MULTI = Task("multilabel", ("x", "y"))
REG = Task("regression", ("u", "v"))


def test_classification_loss_and_accuracy():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    target = torch.tensor([1, 0])
    expected = (math.log(3) + (math.log(2 + math.exp(2)) - 2)) / 2
    assert task_loss(CLS, logits, target).item() == pytest.approx(expected, rel=1e-6)
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([1, 0, 0, 2])
    assert task_metrics(CLS, logits, target) == {"accuracy": 0.5}


def test_multilabel_loss_and_metrics():
    logits = torch.tensor([[0.0, 0.0]])
    assert task_loss(MULTI, logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(math.log(2))
    # predictions (logit > 0): [1,0], [1,1], [0,0]; targets [1,0], [0,1], [1,0]
    logits = torch.tensor([[3.0, -1.0], [2.0, 1.0], [-1.0, -2.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    metrics = task_metrics(MULTI, logits, target)
    # TP = 2, FP = 1, FN = 1 → F1 = 4 / 6
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["subset_accuracy"] == pytest.approx(1 / 3)
    assert task_metrics(MULTI, -torch.ones(2, 2), torch.zeros(2, 2))["f1"] == 1.0


def test_regression_loss_and_metrics():
    out = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [2.0, 0.0], [5.0, 0.0]])
    # errors 0,0,-2 and 0,0,1 → mse = 5/6, mae = 3/6
    assert task_loss(REG, out, target).item() == pytest.approx(5 / 6)
    metrics = task_metrics(REG, out, target)
    assert metrics["mse"] == pytest.approx(5 / 6)
    assert metrics["mae"] == pytest.approx(0.5)
    # column u: ss_res = 4, ss_tot = 26/3 → r2 = 1 - 12/26; column v: constant target, wrong → 0
    assert metrics["r2"] == pytest.approx((1 - 12 / 26 + 0.0) / 2)
    assert task_metrics(REG, target, target)["r2"] == pytest.approx(1.0)


def test_target_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match=r"\(B, 2\)"):
        task_loss(REG, torch.zeros(4, 2), torch.zeros(4))


def test_primary_metrics():
    assert primary_metric(CLS) == ("accuracy", True)
    assert primary_metric(MULTI) == ("f1", True)
    assert primary_metric(REG) == ("mse", False)
    for task in (CLS, MULTI, REG):
        name = primary_metric(task)[0]
        out = torch.zeros(2, task.num_outputs)
        y = torch.zeros(2, dtype=torch.long) if task is CLS else torch.zeros(2, task.num_outputs)
        assert next(iter(task_metrics(task, out, y))) == name


def test_stems_for_lists_auto_choice_first():
    assert stems_for("image", "tokens") == ["patch2d"]
    assert stems_for("text", "vector") == ["bag"]
