"""Multi-task architectures (tlroutes.backbones.sharing): the sharing each one claims holds.

- with one expert MMoE is hard sharing; PLE without task-specific experts is MMoE; MTAN with
  all-ones attention is its shared trunk; cross-stitch with identity stitches is independent
  networks (same weights → same outputs);
- a task's loss reaches exactly the parameters the architecture says it shares, never another
  task's private ones; parameter counts are as documented;
- each runs through the Multi-Task Learning route from a run file; bad input is one clear error.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

import tlroutes
from tlroutes.backbones import create_trunk
from tlroutes.backbones.sharing import (
    MTAN,
    PLE,
    CrossStitch,
    MMoE,
    TaskSharing,
    create_sharing,
    list_sharings,
)
from tlroutes.config import load_run_file, parse_run
from tlroutes.errors import ConfigError
from tlroutes.model import build_model, count_parameters
from tlroutes.problem import Domain, Task
from tlroutes.runner import run
from tlroutes.use.export import export_model

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = ("digit", "parity", "size")
CHANNELS = [8, 16]


def image_domain() -> Domain:
    return Domain("digits", "image", (1, 8, 8))


def tasks() -> dict[str, Task]:
    return {"digit": Task("classification", tuple("0123456789"), "digit"),
            "parity": Task("classification", ("even", "odd"), "parity"),
            "size": Task("regression", ("size",), "size")}


def cnn(**kw):
    return lambda: create_trunk("cnn2d", channels=CHANNELS, **kw)


def same_weights(src: nn.Module, dst: nn.Module, rename) -> None:
    """Load ``src``'s state into ``dst`` under ``rename(key)`` (every dst key must be filled)."""
    state = {rename(k): v for k, v in src.state_dict().items()}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    assert not unexpected
    return missing


def per_head(model, x) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return {name: model(x, head=name) for name in model.heads}


# -- equalities --------------------------------------------------------------------------------


def test_mmoe_with_one_expert_is_hard_sharing():
    torch.manual_seed(0)
    hard = build_model(image_domain(), tasks(), "cnn2d", {"channels": CHANNELS})
    mmoe = build_model(image_domain(), tasks(), "cnn2d", {"channels": CHANNELS},
                       sharing="mmoe", sharing_args={"experts": 1})
    missing = same_weights(hard, mmoe, lambda k: k.replace("trunk.", "trunk.experts.0.", 1))
    assert all(".gates." in k for k in missing)  # the gates are all that hard sharing lacks
    torch.nn.init.normal_(mmoe.trunk.gates["digit"].weight)  # any gate: softmax over 1 is 1
    x = torch.randn(6, 1, 8, 8)
    a, b = per_head(hard, x), per_head(mmoe, x)
    for name in TASKS:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_ple_without_task_experts_is_mmoe():
    torch.manual_seed(1)
    mmoe = MMoE(cnn(), TASKS, experts=3)
    ple = PLE(cnn(), TASKS, shared_experts=3, task_experts=0, levels=1)
    for gate in mmoe.gates.values():
        torch.nn.init.normal_(gate.weight)  # gates that do prefer some experts
    missing = same_weights(mmoe, ple, lambda k: "levels.0." + k.replace(
        "experts.", "shared_experts.", 1) if k.startswith("experts.") else "levels.0." + k)
    assert not missing  # with no task experts, PLE's parameters are MMoE's
    x = torch.randn(5, 8, 8, 8)
    mmoe.eval(), ple.eval()
    with torch.no_grad():
        a, b = mmoe(x).per_task, ple(x).per_task
    for name in TASKS:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_mtan_with_all_ones_attention_is_the_shared_trunk():
    torch.manual_seed(2)
    mtan = MTAN(cnn(), TASKS)
    for masks in mtan.attention.values():
        for j in range(len(masks)):
            masks[j] = _AllOnes(mtan.trunk.stages[j].conv.out_channels)
    x = torch.randn(4, 8, 8, 8)
    mtan.eval()
    with torch.no_grad():
        alone = mtan.trunk(x)
        out = mtan(x).per_task
    for name in TASKS:
        torch.testing.assert_close(out[name], alone, rtol=0, atol=0)


class _AllOnes(nn.Module):
    """An attention module whose mask is 1 everywhere (the masked stage output unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, i):
        return torch.ones(i.shape[0], self.channels, *i.shape[2:])


def test_mtan_masks_change_the_features():
    # the test above must be able to fail: the real (trained-free) masks are not all ones
    torch.manual_seed(2)
    mtan = MTAN(cnn(), TASKS).eval()
    x = torch.randn(4, 8, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(mtan(x).per_task["digit"], mtan.trunk(x))


def test_cross_stitch_with_identity_stitch_is_independent_networks():
    torch.manual_seed(3)
    cs = CrossStitch(cnn(), TASKS).eval()
    x = torch.randn(4, 8, 8, 8)
    with torch.no_grad():
        mixed = cs(x).per_task
        for alpha in cs.stitch:
            alpha.copy_(torch.eye(len(TASKS)))
        stitched = cs(x).per_task
        for name in TASKS:
            torch.testing.assert_close(stitched[name], cs.columns[name](x), rtol=0, atol=0)
    # at the paper's 0.9/0.1 start the columns do mix
    assert not torch.allclose(mixed["digit"], stitched["digit"])


def test_cross_stitch_starts_at_the_papers_convex_combination():
    cs = CrossStitch(cnn(), TASKS, self_weight=0.8)
    for alpha in cs.stitch:
        torch.testing.assert_close(alpha.sum(1), torch.ones(3))
        torch.testing.assert_close(alpha.diagonal(), torch.full((3,), 0.8))


# -- who reaches what --------------------------------------------------------------------------


def reached(sharing: TaskSharing, x: torch.Tensor, task: str) -> set[int]:
    """ids of the parameters ``task``'s loss sends a non-zero gradient to."""
    sharing.train()
    feats = sharing(x).per_task[task]
    loss = (feats * torch.randn_like(feats)).sum()
    params = list(sharing.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {id(p) for p, g in zip(params, grads, strict=True)
            if g is not None and bool(g.abs().sum() > 0)}


ARCHITECTURES = [
    ("mmoe", {"experts": 3}),
    ("ple", {"shared_experts": 2, "task_experts": 1, "levels": 1}),
    ("ple", {"shared_experts": 1, "task_experts": 2, "levels": 2}),
    ("ple", {"shared_experts": 1, "task_experts": 1, "levels": 3}),
    ("mtan", {}),
    ("cross_stitch", {}),
]


@pytest.mark.parametrize(("name", "args"), ARCHITECTURES)
def test_private_parameters_are_reached_by_their_task_only(name, args):
    torch.manual_seed(4)
    sharing = create_sharing(name, cnn(), TASKS, **args)
    x = torch.randn(8, 8, 8, 8)
    by_task = {t: reached(sharing, x, t) for t in TASKS}
    for task in TASKS:
        private = {id(p) for p in sharing.private_parameters(task)}
        assert private <= by_task[task], "a task's own parameters get its gradient"
        for other in TASKS:
            if other != task:
                assert not private & by_task[other], f"{other}'s loss reached {task}'s private"
    # the shared parameters are exactly those several tasks reach
    shared = {id(p) for p in sharing.shared_parameters()}
    several = {i for i in shared if sum(i in by_task[t] for t in TASKS) >= 2}
    assert shared == several
    assert shared | {id(p) for t in TASKS for p in sharing.private_parameters(t)} == {
        id(p) for p in sharing.parameters()}


def test_identity_stitch_keeps_each_loss_in_its_column_but_can_learn_to_share():
    torch.manual_seed(5)
    cs = CrossStitch(cnn(), TASKS)
    with torch.no_grad():
        for alpha in cs.stitch:
            alpha.copy_(torch.eye(3))
    x = torch.randn(8, 8, 8, 8)
    feats = cs(x).per_task["digit"]
    loss = (feats * torch.randn_like(feats)).sum()
    column = list(cs.columns["parity"].parameters())
    grads = torch.autograd.grad(loss, [*column, *cs.stitch], allow_unused=True)
    assert all(g is None or not g.any() for g in grads[: len(column)])
    # α[digit, parity] gets a gradient: sharing can grow from independent columns
    assert all(g[0, 1] != 0 for g in grads[len(column):])


def test_hard_sharing_shares_stem_and_trunk():
    model = build_model(image_domain(), tasks(), "cnn2d", {"channels": CHANNELS})
    assert {id(p) for p in model.shared_parameters()} == {
        id(p) for p in [*model.stems.parameters(), *model.trunk.parameters()]}


# -- parameter counts --------------------------------------------------------------------------


def test_parameter_counts_are_as_documented():
    trunk = count_parameters(cnn()())
    k, width, d = len(TASKS), CHANNELS[0], CHANNELS[-1]
    assert count_parameters(MMoE(cnn(), TASKS, experts=4)) == 4 * trunk + k * 4 * width
    ple = PLE(cnn(), TASKS, shared_experts=2, task_experts=1, levels=1)
    assert count_parameters(ple) == (2 + k) * trunk + k * 3 * width
    ple2 = PLE(cnn(), TASKS, shared_experts=2, task_experts=1, levels=2)
    second = (2 + k) * (d * d + d) + k * 3 * d
    assert count_parameters(ple2) == (2 + k) * trunk + k * 3 * width + (k + 2) * width + second
    # MTAN: one trunk + the shared f_2 (3x3 conv 8→16 without bias, batch norm) + per task
    # two 1x1 conv → norm pairs per stage (stage 1 reads 8 channels, stage 2 reads 2 × 16)
    f = 8 * 16 * 9 + 2 * 16
    att = (8 * 8 + 8 + 16) * 2 + (32 * 16 + 16 + 32) + (16 * 16 + 16 + 32)
    assert count_parameters(MTAN(cnn(), TASKS)) == trunk + f + k * att
    assert count_parameters(CrossStitch(cnn(), TASKS)) == k * trunk + len(CHANNELS) * k * k


def test_every_first_level_expert_is_initialised_anew():
    mmoe = MMoE(cnn(), TASKS, experts=2)
    a, b = (e.stages[0].conv.weight for e in mmoe.experts)
    assert not torch.equal(a, b)


# -- the model around them ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "args"), ARCHITECTURES)
def test_model_calls_agree(name, args):
    torch.manual_seed(6)
    model = build_model(image_domain(), tasks(), "cnn2d", {"channels": CHANNELS},
                        sharing=name, sharing_args=args).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        outs = model.forward_heads(x)
        feats = model.task_features(x).per_task
        for head in TASKS:
            torch.testing.assert_close(model(x, head=head), outs[head])
            torch.testing.assert_close(model.heads[head](feats[head]), outs[head])
    assert outs["size"].shape == (3, 1) and outs["digit"].shape == (3, 10)
    with pytest.raises(ConfigError, match="task_features"):
        model.features(x)


def test_sequence_trunks_take_mtan_and_cross_stitch():
    for name in ("mtan", "cross_stitch"):
        sharing = create_sharing(name, lambda: create_trunk("cnn1d", channels=[4, 8, 8]),
                                 ["a", "b"])
        out = sharing(torch.randn(2, 4, 32))
        assert out.per_task["a"].shape == (2, 8)


def test_mmoe_takes_any_trunk():
    sharing = create_sharing("mmoe", lambda: create_trunk("transformer", dim=16, heads=2),
                             ["a", "b"], experts=2)
    assert sharing(torch.randn(2, 5, 16)).per_task["b"].shape == (2, 16)


# -- bad input ---------------------------------------------------------------------------------


def test_bad_architectures_are_one_clear_error():
    with pytest.raises(ConfigError, match="Did you mean 'mmoe'"):
        create_sharing("mmeo", cnn(), TASKS)
    with pytest.raises(ConfigError, match="no argument 'expert'.*experts"):
        create_sharing("mmoe", cnn(), TASKS, expert=2)
    with pytest.raises(ConfigError, match="'experts' takes int >= 1 and <= 64; got 0"):
        create_sharing("mmoe", cnn(), TASKS, experts=0)
    with pytest.raises(ConfigError, match="<= 64; got 100000"):  # refused before it is built
        create_sharing("mmoe", cnn(), TASKS, experts=100_000)
    with pytest.raises(ConfigError, match="'levels' takes int >= 1 and <= 16"):
        create_sharing("ple", cnn(), TASKS, levels=17)
    with pytest.raises(ConfigError, match="experts >= 1"):  # the class itself checks too
        MMoE(cnn(), TASKS, experts=0)
    with pytest.raises(ConfigError, match="'experts' takes int"):
        create_sharing("mmoe", cnn(), TASKS, experts="3")
    with pytest.raises(ConfigError, match="'shared_experts' takes int >= 1"):
        create_sharing("ple", cnn(), TASKS, shared_experts=0)
    with pytest.raises(ConfigError, match="self_weight"):
        create_sharing("cross_stitch", cnn(), TASKS, self_weight=1.5)
    with pytest.raises(ConfigError, match="cnn2d or cnn1d.*mmoe or ple"):
        create_sharing("mtan", lambda: create_trunk("mlp"), TASKS)
    with pytest.raises(ConfigError, match="distinct"):
        create_sharing("mmoe", cnn(), ["a", "a"])
    with pytest.raises(ConfigError, match="plain trunk"):
        create_sharing("hard", cnn(), TASKS)
    with pytest.raises(ConfigError, match="trunk name"):
        build_model(image_domain(), tasks(), cnn()(), sharing="mmoe")
    with pytest.raises(ConfigError, match="no task 'other'"):
        MMoE(cnn(), TASKS)(torch.randn(1, 8, 8, 8), ["other"])
    assert list_sharings() == ["cross_stitch", "hard", "mmoe", "mtan", "ple"]


# -- through the route, from a run file --------------------------------------------------------


def mtl_run(tmp_path, recipe: dict, trunk: str = "cnn2d", **training) -> dict:
    return {
        "route": "multi_task_learning", "seed": 0,
        "problems": {"digit": {"dataset": "digits", "task": "digit", "n": 120},
                     "properties": {"dataset": "digits", "task": "properties", "n": 120}},
        "model": {"trunk": trunk, "trunk_args": {"channels": CHANNELS} if trunk == "cnn2d"
                  else {}},
        "training": {"epochs": 1, "batch_size": 32, **training},
        "baseline": False, "recipe": recipe, "hardware": {"accelerator": "cpu"},
    }


def run_from_file(tmp_path, data: dict, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return run(load_run_file(path), tmp_path / name, progress=False)


@pytest.mark.parametrize(("name", "args", "weighting"), [
    ("mmoe", {"experts": 2}, "pcgrad"),
    ("ple", {"shared_experts": 1, "task_experts": 1, "levels": 2}, "mgda"),
    ("mtan", {}, "ew"),
    ("cross_stitch", {"self_weight": 0.9}, "uw"),
])
def test_each_architecture_runs_through_the_route(tmp_path, name, args, weighting):
    data = mtl_run(tmp_path, {"weighting": weighting, "architecture": name,
                              "architecture_args": args})
    summary = run_from_file(tmp_path, data, name)
    assert summary.details["architecture"] == name
    assert set(summary.details["per_task"]) == {"digit", "properties"}
    assert f"shared as {name}" in summary.carried_over
    keys = load_file(next((tmp_path / name).rglob("model.safetensors")))
    marker = {"mmoe": "trunk.gates.digit", "ple": "trunk.levels.1.task_experts.properties",
              "mtan": "trunk.attention.digit", "cross_stitch": "trunk.stitch.0"}[name]
    assert any(k.startswith(marker) for k in keys)
    # the run folder loads (its manifest records the architecture) and exports
    predictor = tlroutes.load(tmp_path / name)
    assert type(predictor.model.trunk).__name__ == {
        "mmoe": "MMoE", "ple": "PLE", "mtan": "MTAN", "cross_stitch": "CrossStitch"}[name]
    x = torch.randn(3, *predictor.model.domains["input"].input_shape)
    assert predictor.predict(x, head="digit").shape == (3,)
    export_model(predictor, format="torchscript", head="properties",
                 out=tmp_path / f"{name}.pt")  # checks its outputs against PyTorch's


def test_a_trunk_the_architecture_cannot_take_is_refused_before_training(tmp_path):
    data = mtl_run(tmp_path, {"architecture": "mtan"}, trunk="mlp")
    data["baseline"] = True
    with pytest.raises(ConfigError, match="cnn2d or cnn1d"):
        run(parse_run(data), tmp_path / "bad", progress=False)
    assert not list((tmp_path / "bad").rglob("*.safetensors"))


@pytest.mark.parametrize(("recipe", "match"), [
    ({"architecture": "mmeo"}, "Did you mean 'mmoe'"),
    ({"architecture": "mmoe", "architecture_args": {"expert": 2}}, "experts"),
    ({"architecture": "hard", "architecture_args": {"experts": 2}}, "takes no"),
    ({"architecture": "ple", "architecture_args": {"levels": 1.5}}, "levels"),
    ({"architecture": "mmoe", "architecture_args": {"experts": 0}}, "'experts' takes int >= 1"),
])
def test_bad_recipe_is_one_clear_error(tmp_path, recipe, match):
    with pytest.raises(ConfigError, match=match):
        run_from_file(tmp_path, mtl_run(tmp_path, recipe), "bad")


# -- with the weightings -----------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["ew", "pcgrad", "mgda", "nash_mtl"])
@pytest.mark.parametrize(("name", "args"), ARCHITECTURES[:2] + ARCHITECTURES[4:])
def test_every_parameter_trains_under_each_weighting(name, args, weighting):
    # as the route's step does: combined gradients on the shared parameters, the task's own
    # (gates, own experts, masks, heads) through the graph walk; MMoE hands MGDA its Z
    from tlroutes.objectives.mtl import create_weighting

    torch.manual_seed(7)
    model = build_model(image_domain(), tasks(), "cnn2d", {"channels": CHANNELS},
                        sharing=name, sharing_args=args)
    x = torch.randn(8, 1, 8, 8)
    targets = {"digit": torch.randint(0, 10, (8,)), "parity": torch.randint(0, 2, (8,)),
               "size": torch.randn(8, 1)}
    out = model.task_features(x)
    losses = [torch.nn.functional.cross_entropy(model.heads[n](out.per_task[n]), targets[n])
              if n != "size" else torch.nn.functional.mse_loss(
                  model.heads[n](out.per_task[n]), targets[n]) for n in TASKS]
    weighting = create_weighting(weighting, num_tasks=3)
    weighting.backward(losses, model.shared_parameters(), shared_features=out.shared)
    untrained = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not untrained
