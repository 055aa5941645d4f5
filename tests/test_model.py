"""TransferModel assembly, freezing, parameter groups and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlroutes.backbones import create_head, create_stem
from tlroutes.errors import CheckpointError, ConfigError
from tlroutes.model import (
    TransferModel,
    apply_frozen_state,
    build_model,
    count_parameters,
    freeze,
    frozen_state,
    param_groups,
    trainable_summary,
    unfreeze,
)
from tlroutes.problem import Domain, Task

DIGITS = Domain("digits", "image", (1, 8, 8))
SIGNAL = Domain("wave", "signal", (1, 16))
LABELS = Task("classification", tuple("0123456789"), name="labels")
PARITY = Task("classification", ("even", "odd"), name="parity")
SMALL_CNN = {"channels": (8, 16)}


class TinyTrunk(nn.Module):
    input_kind = "vector"
    in_width = 4
    out_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)  # 20 parameters

    def forward(self, x):
        return self.fc(x)


def tiny_model() -> TransferModel:
    """16 (stem) + 20 (trunk) + 10 (head) = 46 parameters."""
    return TransferModel({"a": nn.Linear(3, 4)}, TinyTrunk(), {"t": nn.Linear(4, 2)})


def test_build_model_keys_by_name_and_names_may_be_omitted():
    model = build_model(DIGITS, LABELS, trunk_args=SMALL_CNN)
    assert list(model.stems) == ["digits"] and list(model.heads) == ["labels"]
    assert model.domains == {"digits": DIGITS} and model.tasks == {"labels": LABELS}
    x = torch.randn(3, 1, 8, 8)
    out = model(x)
    assert out.shape == (3, 10)
    assert torch.equal(out, model(x, stem="digits", head="labels"))
    assert model.features(x).shape == (3, 16)


def test_several_stems_and_heads_need_names():
    model = build_model(
        [DIGITS, SIGNAL],
        {"l": LABELS, "p": PARITY},
        trunk="mlp",
        trunk_args={"width": 8, "depth": 1},
    )
    assert model(torch.randn(2, 1, 16), stem="wave", head="p").shape == (2, 2)
    with pytest.raises(ConfigError, match="pass stem=<name>"):
        model(torch.randn(2, 1, 16), head="p")
    with pytest.raises(ConfigError, match=r"Did you mean 'wave'.*digits, wave"):
        model(torch.randn(2, 1, 16), stem="wav", head="p")
    outs = model.forward_heads(torch.randn(2, 1, 8, 8), stem="digits")
    assert {k: v.shape for k, v in outs.items()} == {"l": (2, 10), "p": (2, 2)}


def test_per_domain_stem_args_and_module_trunk():
    text = Domain("words", "text", (6,))
    trunk = TinyTrunk()
    model = build_model(
        [text, Domain("tab", "tabular", (3,))],
        PARITY,
        trunk=trunk,
        stem_args={"words": {"vocab_size": 11}},
    )
    assert model.trunk is trunk
    assert model(torch.randint(0, 11, (2, 6)), stem="words").shape == (2, 2)
    with pytest.raises(ConfigError, match="trunk_args"):
        build_model(DIGITS, LABELS, trunk=TinyTrunk(), trunk_args={"width": 3})


def test_add_stem_and_head_carry_the_trunk():
    model = build_model(DIGITS, LABELS, trunk="mlp", trunk_args={"width": 8, "depth": 1})
    model.add_stem("wave", create_stem(SIGNAL, model.trunk), domain=SIGNAL)
    model.add_head("parity", create_head(PARITY, model.trunk.out_dim), task=PARITY)
    assert model(torch.randn(2, 1, 16), stem="wave", head="parity").shape == (2, 2)
    assert model.tasks["parity"] is PARITY
    with pytest.raises(ConfigError, match="replace=True"):
        model.add_head("parity", nn.Linear(8, 2))
    model.add_head("parity", nn.Linear(8, 3), replace=True)
    assert model(torch.randn(2, 1, 8, 8), stem="digits", head="parity").shape == (2, 3)
    model.remove_head("labels")
    assert list(model.tasks) == ["parity"]
    assert model(torch.randn(2, 1, 8, 8), stem="digits").shape == (2, 3)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_by_part_and_pattern_freezes_exactly_those():
    model = build_model(
        DIGITS, LABELS, trunk="transformer", trunk_args={"dim": 8, "depth": 2, "heads": 2}
    )
    names = {n for n, _ in model.named_parameters()}
    frozen = freeze(model, parts=["stems.digits"], patterns=["*norm*", "trunk.blocks.0.*"])
    expected = {
        n
        for n in names
        if n.startswith("stems.digits.") or "norm" in n or n.startswith("trunk.blocks.0.")
    }
    assert set(frozen) == expected
    assert _trainable(model) == names - expected
    assert "trunk.norm.weight" in frozen and "trunk.pos_embed" not in frozen
    assert set(frozen_state(model)) == expected
    thawed = unfreeze(model, patterns="*norm*")
    assert _trainable(model) == (names - expected) | set(thawed)


def test_frozen_weights_stay_bit_identical_after_a_step():
    torch.manual_seed(0)
    model = build_model(DIGITS, LABELS, trunk_args=SMALL_CNN)
    freeze(model, parts="trunk")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for name, p in model.named_parameters():
        if name.startswith("trunk."):
            assert torch.equal(p, before[name]), name
        else:
            assert not torch.equal(p, before[name]), name


def test_freeze_that_matches_nothing_is_a_config_error():
    model = tiny_model()
    with pytest.raises(ConfigError, match="no parts and no patterns"):
        freeze(model)
    with pytest.raises(ConfigError, match=r"'\*nrm\*' matched no parameter.*trunk\.fc\.weight"):
        freeze(model, parts=["trunk"], patterns=["*nrm*"])
    with pytest.raises(ConfigError, match="Did you mean 'trunk'"):
        freeze(model, parts=["trnk"])
    with pytest.raises(ConfigError, match="patterns="):
        freeze(model, parts=["trunk.*"])
    assert frozen_state(model) == []  # a failed freeze changes nothing


def test_frozen_state_round_trip():
    model = tiny_model()
    freeze(model, parts=["heads"])
    state = frozen_state(model)
    assert state == ["heads.t.weight", "heads.t.bias"]
    other = tiny_model()
    freeze(other, parts=["stems"])
    apply_frozen_state(other, state)
    assert frozen_state(other) == state
    with pytest.raises(CheckpointError, match="another model"):
        apply_frozen_state(other, ["trunk.missing"])


def test_param_groups_most_specific_wins_and_cover_each_param_once():
    model = build_model(
        DIGITS, LABELS, trunk="transformer", trunk_args={"dim": 8, "depth": 2, "heads": 2}
    )
    freeze(model, parts="stems")
    mult = {"trunk": 0.1, "trunk.blocks.1": 0.5, "*norm*": 0.0}
    groups = param_groups(model, lr=1e-2, multipliers=mult, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(id(p) for p in trainable)
    owner = {id(p): g for g in groups for p in g["params"]}
    params = dict(model.named_parameters())

    def group_of(name):
        return owner[id(params[name])]

    assert group_of("heads.labels.weight")["name"] == "default"
    assert group_of("heads.labels.weight")["lr"] == pytest.approx(1e-2)
    assert group_of("trunk.pos_embed")["lr"] == pytest.approx(1e-3)
    assert group_of("trunk.blocks.1.attn.qkv.weight")["lr"] == pytest.approx(5e-3)
    # "trunk.blocks.1" (14 chars) is longer than "*norm*" (6): it wins inside block 1
    assert group_of("trunk.blocks.1.norm1.weight")["name"] == "trunk.blocks.1"
    assert group_of("trunk.blocks.0.norm1.weight")["lr"] == 0.0
    assert group_of("trunk.norm.bias")["name"] == "*norm*"
    assert all(g["weight_decay"] == 0.05 for g in groups)
    assert not any(id(p) in owner for p in model.stems.parameters())
    torch.optim.AdamW(groups)  # accepted by an optimizer as is


def test_param_groups_unknown_key_is_a_config_error():
    with pytest.raises(ConfigError, match="'trunks' matched no parameter"):
        param_groups(tiny_model(), lr=0.1, multipliers={"trunks": 0.1})


def test_trainable_summary_on_a_hand_computed_model():
    model = tiny_model()
    assert count_parameters(model) == 46
    freeze(model, parts="trunk")
    assert count_parameters(model, trainable_only=True) == 26
    lines = trainable_summary(model).splitlines()
    assert lines[0] == "trainable params: 26 || all params: 46 || trainable%: 56.52"
    rows = {line.split()[0]: line.split()[-3:] for line in lines[1:]}
    assert rows["stems"] == ["16", "/", "16"]
    assert rows["trunk"] == ["0", "/", "20"]
    assert rows["heads"] == ["10", "/", "10"]
    assert rows["t"] == ["10", "/", "10"]


def test_print_trainable_parameters(capsys):
    tiny_model().print_trainable_parameters()
    assert "trainable params: 46 || all params: 46 || trainable%: 100.00" in capsys.readouterr().out
