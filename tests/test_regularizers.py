"""Fine-tuning regularisers (L2-SP, BSS) and LoRA through PEFT, with known answers."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlroutes.errors import ConfigError, DataError, MissingExtraError
from tlroutes.model import build_model
from tlroutes.objectives.regularizers import L2SP, BatchSpectralShrinkage
from tlroutes.problem import Domain, Task

TAB = Domain("tab", "tabular", (6,))
SOURCE = Task("classification", ("a", "b", "c"), name="source")
TARGET = Task("classification", ("x", "y"), name="target")
IMG = Domain("img", "image", (1, 8, 8))


# These models are tiny: one thread is fastest, and far faster on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(TAB, SOURCE, trunk="mlp", trunk_args={"width": 16, "depth": 2})


def pretrained_for_target(seed: int = 0):
    """A tiny model 'pretrained' on a source task, then given a fresh head for the target."""
    model = tiny_model(seed)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.remove_head("source")
    torch.manual_seed(seed + 1)
    model.add_head("target", nn.Linear(16, 2), task=TARGET)
    return model


# -- L2-SP ------------------------------------------------------------------------------------


def test_l2sp_anchor_is_a_copy_not_a_view():
    model = tiny_model()
    reg = L2SP(model)
    params = dict(model.named_parameters())
    name = "trunk.blocks.0.fc.weight"
    assert name in reg.carried
    anchor = reg.start(name)
    assert anchor.data_ptr() != params[name].data_ptr()
    before = anchor.clone()
    with torch.no_grad():
        params[name].add_(1.0)
    assert torch.equal(reg.start(name), before)
    assert not torch.equal(reg.start(name), params[name])
    # buffers are persistent, dot-free, and the model's weights are not in the state_dict
    keys = list(reg.state_dict())
    assert keys and all(k.startswith("anchor.") and "." not in k[len("anchor.") :] for k in keys)
    assert len(keys) == len(reg.carried)
    assert not any(k.startswith(("stems", "trunk", "heads")) for k in keys)


def test_l2sp_matches_hand_computation():
    model = tiny_model()
    reg = L2SP(model, alpha=0.3, beta=0.2)
    assert set(reg.carried) == {n for n, _ in model.named_parameters() if not n.startswith("heads")}
    assert set(reg.new) == {"heads.source.weight", "heads.source.bias"}
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    # at the start, the pull is zero and only the decay on the new head remains
    head_sq = sum(p.pow(2).sum() for n, p in model.named_parameters() if n.startswith("heads"))
    torch.testing.assert_close(reg(), 0.5 * 0.2 * head_sq)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    pull = sum(
        (p - start[n]).pow(2).sum()
        for n, p in model.named_parameters()
        if not n.startswith("heads")
    )
    head_sq = sum(p.pow(2).sum() for n, p in model.named_parameters() if n.startswith("heads"))
    expected = 0.5 * 0.3 * pull + 0.5 * 0.2 * head_sq
    torch.testing.assert_close(reg(), expected)
    torch.testing.assert_close(reg.distance(), pull.detach().sqrt())
    # frozen parameters do not count
    for n, p in model.named_parameters():
        if n.startswith("trunk"):
            p.requires_grad_(False)
    trunk_pull = sum(
        (p - start[n]).pow(2).sum() for n, p in model.named_parameters() if n.startswith("trunk")
    )
    torch.testing.assert_close(reg(), expected - 0.5 * 0.3 * trunk_pull)


def test_l2sp_gradient_points_back_to_the_anchor():
    model = tiny_model()
    reg = L2SP(model, alpha=1.0, beta=0.0)
    p = dict(model.named_parameters())["trunk.blocks.1.fc.bias"]
    with torch.no_grad():
        p.add_(0.5)
    reg().backward()
    torch.testing.assert_close(p.grad, torch.full_like(p, 0.5))


def test_l2sp_bad_prefixes():
    model = tiny_model()
    with pytest.raises(ConfigError, match="'trunkk' matched no parameter"):
        L2SP(model, include=("trunkk",))
    with pytest.raises(ConfigError, match="at least one prefix"):
        L2SP(model, include=())
    with pytest.raises(ConfigError, match="both"):
        L2SP(model, include=("trunk",), new=("trunk.blocks.0",))
    with pytest.raises(ConfigError, match="alpha must be a non-negative number"):
        L2SP(model, alpha=-1)
    plain = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="new=\\(\\)"):
        L2SP(plain, include=("0",))
    assert L2SP(plain, include=("0",), new=()).carried == ("0.weight", "0.bias")


def test_l2sp_state_dict_round_trip_restores_the_anchor():
    model = tiny_model(0)
    reg = L2SP(model)
    saved = reg.state_dict()
    other = tiny_model(5)  # different weights
    reg2 = L2SP(other)
    name = "trunk.blocks.0.fc.weight"
    assert not torch.equal(reg2.start(name), reg.start(name))
    reg2.load_state_dict(saved)
    for n in reg.carried:
        assert torch.equal(reg2.start(n), reg.start(n))
    # a resumed run pulls toward the original anchor, not toward the new model's weights
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(reg2(), reg())


def _fine_tune(model: nn.Module, reg: L2SP | None, steps: int = 60) -> nn.Module:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 2] * x[:, 3] > 0).long()  # a new task the source features don't give directly
    torch.manual_seed(11)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if reg is not None:
            loss = loss + reg()
        loss.backward()
        opt.step()
    return model


def test_l2sp_keeps_fine_tuning_closer_to_the_start():
    plain_model = pretrained_for_target()
    l2sp_model = pretrained_for_target()
    for a, b in zip(plain_model.parameters(), l2sp_model.parameters(), strict=True):
        assert torch.equal(a, b)
    plain_meter = L2SP(plain_model, alpha=0.0, beta=0.0)  # only measures the distance
    reg = L2SP(l2sp_model, alpha=0.5, beta=0.01)
    _fine_tune(plain_model, None)
    _fine_tune(l2sp_model, reg)
    plain_dist, l2sp_dist = plain_meter.distance().item(), reg.distance().item()
    assert plain_dist > 0.1
    assert l2sp_dist < 0.7 * plain_dist, (plain_dist, l2sp_dist)


# -- BSS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("shape", [(16, 5), (4, 9)])
def test_bss_matches_numpy_svd(k, shape):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape)
    s = np.linalg.svd(a, compute_uv=False)  # descending
    expected = float(np.sum(np.sort(s)[:k] ** 2))
    got = BatchSpectralShrinkage(k)(torch.tensor(a, dtype=torch.float64))
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_bss_gradient_flows_and_shrinks_smallest_direction():
    torch.manual_seed(0)
    feats = torch.randn(12, 4, requires_grad=True)
    bss = BatchSpectralShrinkage(k=1)
    before = bss(feats)
    before.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert feats.grad.abs().sum() > 0
    with torch.no_grad():
        after = bss(feats - 0.05 * feats.grad)
    assert after < before


def test_bss_edge_cases():
    bss = BatchSpectralShrinkage(k=3)
    x = torch.randn(2, 8)  # only two singular values: all are used
    torch.testing.assert_close(bss(x), torch.linalg.svdvals(x).pow(2).sum())
    assert bss(x.bfloat16()).dtype == torch.float32
    with pytest.raises(DataError, match=r"\(B, d\)"):
        bss(torch.randn(2, 3, 4))
    with pytest.raises(ConfigError):
        BatchSpectralShrinkage(k=0)


# -- LoRA --------------------------------------------------------------------------------------


def test_lora_missing_extra_names_the_extra(monkeypatch):
    from tlroutes.lora import apply_lora, merge_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` raise ImportError
    with pytest.raises(MissingExtraError, match=r"tlroutes\[lora\]"):
        apply_lora(tiny_model())
    with pytest.raises(MissingExtraError, match=r"tlroutes\[lora\]"):
        merge_lora(tiny_model())


def _lora_model(trunk: str = "mlp"):
    torch.manual_seed(0)
    if trunk == "mlp":
        return build_model(TAB, SOURCE, trunk="mlp", trunk_args={"width": 16, "depth": 2})
    return build_model(IMG, SOURCE, trunk="cnn2d", trunk_args={"channels": (4, 8)})


@pytest.mark.parametrize("trunk", ["mlp", "cnn2d"])
def test_lora_trains_adapters_only(trunk):
    pytest.importorskip("peft")
    from tlroutes.lora import apply_lora, default_lora_targets, lora_parameters

    model = _lora_model(trunk).eval()
    x = torch.randn(8, *(TAB.input_shape if trunk == "mlp" else IMG.input_shape))
    y = torch.randint(0, 3, (8,))
    with torch.no_grad():
        y0 = model(x)
    targets = default_lora_targets(model)
    assert targets and all(t.startswith("trunk.") for t in targets)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()}

    assert apply_lora(model, r=2, alpha=4) is model
    names = dict(model.named_parameters())
    lora = lora_parameters(model)
    assert len(lora) == 2 * len(targets)
    assert all(names[n].requires_grad for n in lora)
    for n, p in names.items():
        if n.startswith("heads"):
            assert p.requires_grad, n
        elif n not in lora:
            assert not p.requires_grad, n  # trunk base weights, norms and the stem
    with torch.no_grad():
        torch.testing.assert_close(model(x), y0, rtol=0, atol=0)  # lora_B starts at zero

    frozen = {n: p.detach().clone() for n, p in names.items() if not p.requires_grad}
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    for n, before in base_before.items():  # the pretrained trunk weights, bit for bit
        if n.startswith("trunk"):
            module, _, leaf = n.rpartition(".")
            after = names[n] if n in names else names[f"{module}.base_layer.{leaf}"]
            assert torch.equal(after, before), n
    with torch.no_grad():
        assert not torch.allclose(model(x), y0)


def test_lora_targets_and_errors():
    pytest.importorskip("peft")
    from tlroutes.lora import apply_lora, lora_parameters, merge_lora

    model = build_model(IMG, SOURCE, trunk="transformer", trunk_args={"dim": 16, "depth": 2})
    with pytest.raises(ConfigError, match="matched no module"):
        apply_lora(model, target_modules=["trunk.blocks.0.nothing"])
    with pytest.raises(ConfigError, match="matched only LayerNorm"):
        apply_lora(model, target_modules=["norm1"])
    with pytest.raises(ConfigError, match="no LoRA layer"):
        merge_lora(model)
    apply_lora(model, r=2, target_modules=["qkv"], trainable=())
    lora = lora_parameters(model)
    assert len(lora) == 4 and all(".attn.qkv." in n for n in lora)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n not in lora)
    with pytest.raises(ConfigError, match="already has LoRA"):
        apply_lora(model)
    with pytest.raises(ConfigError, match="no trunk"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)))


def test_merge_lora_keeps_outputs_and_restores_names():
    pytest.importorskip("peft")
    from tlroutes.lora import apply_lora, lora_parameters, merge_lora

    model = _lora_model("cnn2d").eval()
    names_before = [n for n, _ in model.named_parameters()]
    apply_lora(model, r=2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    x = torch.randn(4, *IMG.input_shape)
    with torch.no_grad():
        y_lora = model(x)
    merge_lora(model)
    assert lora_parameters(model) == []
    assert [n for n, _ in model.named_parameters()] == names_before
    with torch.no_grad():
        torch.testing.assert_close(model(x), y_lora, rtol=1e-4, atol=1e-5)
