"""Domain Adaptation across label sets: the variants of ``tlroutes.routes.da_variants``.

Partial (PADA) and open-set (OSBP) come first: the choice of variant from the classes present,
the losses' values by hand, bad input, then known answers end to end on Gaussian ``.npz``
problems (``tests/test_routes_known_answers.py``'s style: an ``mlp`` trunk, one torch thread, no
report) and the partial example run file, quick.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import summary_dict
from tlroutes.config import load_run_file, parse_run
from tlroutes.demo import quick_spec
from tlroutes.errors import ConfigError
from tlroutes.objectives.alignment.adversarial import domain_bce
from tlroutes.objectives.alignment.dann import DomainAdversarialLoss
from tlroutes.objectives.alignment.osbp import OpenSetBackpropLoss, open_set_scores
from tlroutes.objectives.alignment.pada import (
    PartialAdversarialLoss,
    pada_class_weights,
    weighted_cross_entropy,
)
from tlroutes.objectives.alignment.source_support import SUPPORT_THRESHOLD, SourceSupport
from tlroutes.problem import Domain, Problem, Split, Task
from tlroutes.routes.da_variants import label_relation, to_source_labels
from tlroutes.routes.domain_adaptation import Recipe, choose_variant
from tlroutes.runner import run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# ================================================================ partial and open-set (PADA, OSBP)


def problem(labels: list[str], present: list[int], name: str = "p") -> Problem:
    """A tiny classification problem declaring ``labels`` with samples of ``present`` only."""
    y = torch.tensor(present * 2)
    split = Split(torch.randn(len(y), 2), y)
    return Problem(name, Task("classification", tuple(labels)), Domain(name, "tabular", (2,)),
                   split, split, split)


SPEC = SimpleNamespace(constraints=SimpleNamespace(source_data=True))
FIVE = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(("target_labels", "present", "share", "variant", "kind"), [
    (FIVE, [0, 1, 2, 3, 4], 0.0, "closed", "identical"),
    (["e", "d", "c", "b", "a"], [0, 1, 2, 3, 4], 0.0, "closed", "identical"),  # by name
    (FIVE, [0, 1], 0.0, "partial", "subset"),  # declared the same, present fewer
    (["b", "a"], [0, 1], 0.0, "partial", "subset"),
    (["a", "b", "new"], [0, 1, 2], 0.0, "open_set", "overlapping"),
    ([*FIVE, "new"], [0, 1, 2, 3, 4, 5], 0.0, "open_set", "superset"),
    (["a", "b", "new"], [0, 1, 2], 0.5, "new_label_set", "overlapping"),
])
def test_auto_picks_the_variant_from_the_classes_present(target_labels, present, share,
                                                         variant, kind):
    source, target = problem(FIVE, [0, 1, 2, 3, 4], "s"), problem(target_labels, present, "t")
    assert label_relation(source, target).kind == kind
    chosen, reason = choose_variant(source, target, Recipe(target_labels=share), SPEC)
    assert chosen == variant
    assert reason.startswith("auto: ")


def test_target_labels_are_renumbered_by_name_and_unknown_classes_get_k():
    source, target = problem(FIVE, [0, 1, 2, 3, 4]), problem(["c", "new", "a"], [0, 1, 2])
    renumbered = to_source_labels(target, source, unknown=5)
    assert renumbered.train.y.tolist() == [2, 5, 0, 2, 5, 0]
    assert renumbered.task == source.task
    with pytest.raises(ConfigError, match="new"):
        to_source_labels(target, source)


def test_a_target_with_no_class_in_common_says_which_routes_fit():
    source, target = problem(FIVE, [0, 1, 2, 3, 4]), problem(["x", "y"], [0, 1])
    with pytest.raises(ConfigError, match="no class in common") as error:
        choose_variant(source, target, Recipe(), SPEC)
    for fits in ("target_labels", "new_label_set", "task_fine_tuning", "matched by name"):
        assert fits in str(error.value)
    # Modality Transfer and Task Adaptation refuse this pair (same task kind), so the message
    # must not send a user there
    assert "modality_transfer" not in str(error.value)
    # with target labels the same pair is the supervised new-label-set variant
    assert choose_variant(source, target, Recipe(target_labels=0.5), SPEC)[0] == "new_label_set"


def test_a_variant_set_against_the_label_sets_names_the_one_that_fits():
    source, target = problem(FIVE, [0, 1, 2, 3, 4]), problem(["a", "new"], [0, 1])
    with pytest.raises(ConfigError, match="Use variant 'open_set'"):
        choose_variant(source, target, Recipe(variant="partial"), SPEC)
    # plain alignment on a subset is allowed when asked for: it is the DANN baseline
    subset = problem(["a", "b"], [0, 1])
    assert choose_variant(source, subset, Recipe(variant="closed"), SPEC)[0] == "closed"


def test_pada_class_weights_by_hand():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]))
    # mean softmax (0.4, 0.5, 0.1), divided by its largest entry 0.5
    assert torch.allclose(pada_class_weights(logits), torch.tensor([0.8, 1.0, 0.2]))
    # T = 0.5 squares the probabilities before renormalising each row
    p = torch.tensor([[0.36, 0.09, 0.01], [0.04, 0.49, 0.01]])
    gamma = (p / p.sum(1, keepdim=True)).mean(0)
    assert torch.allclose(pada_class_weights(logits, 0.5), gamma / gamma.max())


def test_weighted_cross_entropy_divides_by_the_batch_not_the_weights():
    logits, labels = torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])
    loss = weighted_cross_entropy(logits, labels, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(math.log(2) / 2)  # two of four samples count, ln 2 each


def test_partial_adversarial_loss_leaves_zero_weight_classes_out():
    """γ = 1 is DANN's loss; a class with γ = 0 sends no gradient to its source features."""
    torch.manual_seed(0)
    loss = PartialAdversarialLoss(3, 2, max_steps=1, depth=0).eval()  # eval: λ stays put
    loss.grl.num_steps.fill_(1)  # the warm-up done: λ ≈ 1
    f_s, f_t = torch.randn(4, 3, requires_grad=True), torch.randn(5, 3)
    y_s = torch.tensor([0, 0, 1, 1])
    value = loss(f_s, f_t, y_s)
    plain, _ = domain_bce(loss.discriminator(torch.cat([f_s, f_t])), 4)
    assert value.item() == pytest.approx(plain.item())
    loss.set_class_weight(torch.tensor([1.0, 0.0]))
    loss(f_s, f_t, y_s).backward()
    assert f_s.grad[2:].abs().max() == 0 and f_s.grad[:2].abs().max() > 0


def test_osbp_loss_value_and_the_reversed_gradient():
    """At p(unknown) = t the loss is the binary entropy of t; the head descends the BCE while
    the features get the opposite gradient (the generator maximises)."""
    t = 0.3
    head = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        head.weight.zero_()
    f = torch.ones(1, 2)
    # logits (0, 0, z) with softmax's last entry t: e^z / (2 + e^z) = t
    with torch.no_grad():
        head.weight[2] = math.log(2 * t / (1 - t)) / 2
    osbp = OpenSetBackpropLoss(threshold=t)
    assert osbp(f, head).item() == pytest.approx(-(t * math.log(t) + (1 - t) * math.log(1 - t)))
    assert osbp.last_unknown == pytest.approx(t)
    f = torch.tensor([[1.0, -0.5]], requires_grad=True)
    osbp(f, head).backward()
    reversed_grad = f.grad.clone()
    f.grad = None
    p = torch.softmax(head(f), 1)[:, -1]
    (-(t * torch.log(p) + (1 - t) * torch.log(1 - p))).mean().backward()
    assert torch.allclose(reversed_grad, -f.grad)


def test_source_support_loss_mask_and_no_gradient_to_the_features():
    """The support discriminator's loss is the per-domain averaged domain BCE of its logits on
    the features; it trains the discriminator only (the features get no gradient); a target row
    is unsupported exactly when sigmoid(logit) < 1/4."""
    torch.manual_seed(0)
    support = SourceSupport(3)
    support.eval()  # dropout off, so the by-hand logits are the module's
    f_s = torch.randn(4, 3, requires_grad=True)
    f_t = torch.randn(6, 3, requires_grad=True)
    loss = support(f_s, f_t)
    logits = support.discriminator(torch.cat([f_s, f_t])).reshape(-1)
    by_hand = 0.5 * (torch.nn.functional.softplus(-logits[:4]).mean()
                     + torch.nn.functional.softplus(logits[4:]).mean())
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    loss.backward()
    assert f_s.grad is None and f_t.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in support.parameters())
    q = torch.sigmoid(logits[4:]).detach()
    assert torch.equal(support.target_unsupported(), q < SUPPORT_THRESHOLD)
    assert torch.equal(support.unsupported(f_t), q < SUPPORT_THRESHOLD)
    assert support.last_unsupported == pytest.approx(float((q < SUPPORT_THRESHOLD).float().mean()))
    with pytest.raises(ValueError, match="threshold"):
        SourceSupport(3, threshold=0.6)


def test_dann_target_weight_leaves_a_sample_out_of_the_alignment():
    """A target row weighted 0 adds nothing to DANN's loss and gets no gradient; weights of 1
    give plain DANN."""
    torch.manual_seed(0)
    dann = DomainAdversarialLoss(3, max_steps=10, lo=1.0, batch_norm=False)  # reversal 1 now
    dann.eval()
    f_s, f_t = torch.randn(4, 3), torch.randn(4, 3, requires_grad=True)
    assert dann(f_s, f_t, target_weight=torch.ones(4)).item() == pytest.approx(
        dann(f_s, f_t).item())
    weight = torch.tensor([1.0, 0.0, 1.0, 0.0])
    value = dann(f_s, f_t, target_weight=weight)
    logits = dann.discriminator(torch.cat([f_s, f_t]))
    by_hand, _ = domain_bce(logits, 4, torch.cat([torch.ones(4), weight]))
    assert value.item() == pytest.approx(by_hand.item())
    value.backward()
    assert f_t.grad[[1, 3]].abs().max() == 0 and f_t.grad[[0, 2]].abs().max() > 0


def test_open_set_scores_by_hand():
    # classes 0, 1 known, 2 unknown; predictions by argmax
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 2, 2, 0])
    scores = open_set_scores(torch.nn.functional.one_hot(pred, 3).float(), labels)
    assert scores["os_star"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["unknown_recall"] == pytest.approx(0.75)
    assert scores["os"] == pytest.approx((0.5 + 1.0 + 0.75) / 3)
    assert scores["unknown_precision"] == pytest.approx(1.0)
    assert scores["predicted_unknown"] == pytest.approx(3 / 8)
    assert scores["accuracy"] == pytest.approx(6 / 8)


# ---------------------------------------------------------------- end to end (partial, open-set)


def save(path: Path, splits, labels) -> str:
    """Write ``[(x, y) train, val, test]`` and the label names as the ``.npz`` a run reads."""
    arrays = {}
    for name, (x, y) in zip(("train", "val", "test"), splits, strict=True):
        arrays[f"x_{name}"], arrays[f"y_{name}"] = x.astype(np.float32), y
    np.savez(path, labels=np.array(labels), **arrays)
    return str(path)


def run_summary(tmp_path: Path, name: str, **fields) -> dict:
    spec = {"seed": 0, "route": "domain_adaptation",
            "hardware": {"accelerator": "cpu", "threads": 1},
            "model": {"trunk": "mlp", "trunk_args": {"width": 32, "depth": 1}}, **fields}
    return summary_dict(run(parse_run(spec), tmp_path / name, progress=False))


def open_set_data(rng, n: int, classes: list[int], shift: float, far: float = 12.0):
    """Three known classes on a circle of radius 3 in the first two of 10 dimensions (unit
    noise), and class 3 ("new") ``far`` along the third; ``shift`` moves dimensions 4-10."""
    means = np.zeros((4, 10))
    angle = 2 * np.pi * np.arange(3) / 3
    means[:3, 0], means[:3, 1] = 3 * np.cos(angle), 3 * np.sin(angle)
    means[3, 2] = far
    y = rng.choice(classes, size=n)
    x = means[y] + rng.normal(size=(n, 10))
    x[:, 3:] += shift
    return x, y


def test_open_set_refuses_a_target_mostly_of_unknown_classes(tmp_path):
    rng = np.random.default_rng(0)
    src = [open_set_data(rng, 60, [0, 1, 2], 0.0) for _ in range(3)]
    # classes 3 and 4 (unknown to the source) are 2/3 of the target
    tgt = [(x, np.arange(len(y)) % 3) for x, y in (open_set_data(rng, 60, [0], 0.5)
                                                   for _ in range(3))]
    fields = {"source": {"dataset": save(tmp_path / "s.npz", src, ["a", "b", "c"])},
              "target": {"dataset": save(tmp_path / "t.npz", tgt, ["a", "new", "other"])},
              "source_training": {"epochs": 1}, "target_training": {"epochs": 1}}
    with pytest.raises(ConfigError, match=r"67% of the target.s training samples .*\(new, other\)"):
        run_summary(tmp_path, "refused", **fields)
    with pytest.raises(ConfigError, match="has no option 'treshold'.*Did you mean 'threshold'"):
        run_summary(tmp_path, "typo", recipe={"variant_args": {"treshold": 0.4}}, **fields)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_partial_example_runs_quick_and_names_its_variant(tmp_path, monkeypatch):
    """``examples/domain_adaptation_partial.yaml`` (all ten digits → digits 0-4 rotated) at a third
    of its epochs: ``auto`` picks the partial variant and names why; every source class gets a
    weight. (At a third of the epochs the source model is too weak on the rotated digits for γ
    to separate the classes -- 0.71 absent against 0.59 present -- so the weights' order is
    not asserted here; at the file's full budget it is 0.13 against 0.57, see the file.)"""
    monkeypatch.setattr("tlroutes.runner.build_report", lambda *a, **k: None, raising=False)
    spec = quick_spec(load_run_file(EXAMPLES / "domain_adaptation_partial.yaml"))
    spec = spec.model_copy(update={"hardware": spec.hardware.model_copy(
        update={"accelerator": "cpu"})})
    summary = summary_dict(run(spec, tmp_path / "example", progress=False))
    details = summary  # the summary's dict holds the details at its top level
    assert details["variant"] == "partial" and details["method"] == "weighted_mcc"
    assert details["variant_reason"].startswith("auto: target ⊂ source")
    assert sorted(details["class_weights"]) == [str(d) for d in range(10)]
    assert max(details["class_weights"].values()) == 1.0  # γ / max γ
    assert summary["baseline_kind"] == "source_only"


def partial_data(rng, n: int, classes: list[int], shift: float):
    """Five classes on a circle of radius 3 in the first two of 10 dimensions (unit noise);
    ``shift`` moves the other eight, which carry no class information."""
    angle = 2 * np.pi * np.arange(5) / 5
    means = np.zeros((5, 10))
    means[:, 0], means[:, 1] = 3 * np.cos(angle), 3 * np.sin(angle)
    y = rng.choice(classes, size=n)
    x = means[y] + rng.normal(size=(n, 10))
    x[:, 2:] += shift
    return x, y


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_partial_adaptation_removes_the_negative_transfer_dann_shows(tmp_path, monkeypatch):
    """The source has five classes; the target only classes 0 and 1, shifted by 1 in the eight
    dimensions that carry no class. The discriminator tells the domains apart by the classes the
    target lacks as much as by the shift, so DANN pulls target samples towards classes 2-4 and
    its target accuracy falls far below the source-only model's; closed-set MCC does too (its
    normalised confusion rows of the absent classes pull samples towards them: gain -0.106,
    -0.170, -0.192 on seeds 0-2). The partial variant's class weights (γ about 0.01 on the
    absent classes, about 0.95 on the present two) take those classes out of the losses, and
    both partial methods stay at the source-only level. No target label is used: all keep the
    last epoch (``selection: last``).

    Margins (target test accuracy, 500 samples, the settings below):
    PADA (``warm_up_epochs: 0``, the paper's first γ from the source-only model), seeds 0-5:
    source-only 0.880-0.946; DANN gain -0.311 mean, sd 0.08, from -0.418 to -0.210;
    PADA gain +0.013 mean, sd 0.043, worst -0.060; PADA - DANN +0.323 mean, sd 0.10, worst
    +0.172. Bounds: DANN gain < -0.10 (mean + 2.6 sd); PADA - DANN > 0.10 (mean - 2.2 sd);
    PADA gain > -0.12 (mean - 3 sd). Class-weighted MCC (the default), seeds 0-2: gain +0.018,
    +0.006, +0.018; minus DANN +0.25 or more. Bounds: the same as PADA's.

    Key step removed -- the class weights (``variant_args: {class_weights: false}``, γ = 1):
    PADA becomes DANN on the same pipeline (0.714, 0.484, 0.680 on seeds 0-2, equal to the
    DANN runs to the last digit), weighted MCC becomes MCC (gain -0.11 to -0.19), so the
    second and third assertions fail.
    """
    monkeypatch.setattr("tlroutes.runner.build_report", lambda *a, **k: None, raising=False)
    rng = np.random.default_rng(0)
    source = [partial_data(rng, n, [0, 1, 2, 3, 4], 0.0) for n in (500, 200, 500)]
    target = [partial_data(rng, n, [0, 1], 1.0) for n in (500, 200, 500)]
    fields = {
        # the domains declared: the test is about the label sets, not the placement
        "source": {"dataset": save(tmp_path / "s.npz", source, ["0", "1", "2", "3", "4"]),
                   "domain": "upright"},
        "target": {"dataset": save(tmp_path / "t.npz", target, ["0", "1"]),
                   "domain": "shifted"},
        "source_training": {"epochs": 20, "batch_size": 64, "lr": 0.01},
        "target_training": {"epochs": 20, "batch_size": 64, "lr": 0.01},
    }
    dann = run_summary(tmp_path, "dann", recipe={"variant": "closed", "method": "dann",
                                                 "selection": "last"}, **fields)
    wmcc = run_summary(tmp_path, "weighted_mcc", recipe={"selection": "last"}, **fields)
    pada = run_summary(tmp_path, "pada", recipe={
        "selection": "last", "variant_args": {"method": "pada", "warm_up_epochs": 0}}, **fields)
    assert wmcc["variant"] == "partial" and wmcc["method"] == "weighted_mcc"  # auto's default
    assert pada["variant"] == "partial" and pada["method"] == "pada"
    assert dann["variant"] == "closed"
    assert dann["gain"] < -0.10
    for partial in (wmcc, pada):
        # one source-only model
        assert partial["baseline"]["accuracy"] == dann["baseline"]["accuracy"]
        assert partial["metrics"]["accuracy"] - dann["metrics"]["accuracy"] > 0.10
        assert partial["gain"] > -0.12
        assert partial["mean_weight_absent"] < 0.2 < 0.8 < partial["mean_weight_present"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_open_set_flags_a_planted_unknown_class(tmp_path, monkeypatch, seed):
    """The source has three classes on a circle (radius 3, unit noise, 10 dimensions); the
    target has them too, shifted by 0.5 in seven dimensions, and a fourth class ("new", a quarter
    of the target) 12 away along a dimension no known class uses. ``auto`` picks the open-set
    variant; OSBP (``method: osbp``; the paper's t = 0.5 and reversal coefficient 1, last epoch,
    no target label)
    flags part of the new class as unknown and keeps the known classes right. The source-only
    model never says unknown (recall 0).

    Measured (500 test samples; run seeds 0-9, data seed 0, these settings; 2026-11-30): unknown
    recall 0.944, 0.542, 0.528, 0.641, 0.669, 0.549, 0.775, 0.549, 0.500, 0.444 (mean 0.614, sd
    0.146; >= 0.8 on one seed of ten); OS* 0.866-0.937; OS gain over source-only +0.015 to
    +0.187 (mean +0.097, sd 0.050); predicted unknown 0.20-0.32 (the true share is 0.25). OSBP's
    game splits the unknown cluster on most seeds: the classifier is trained to hold every
    target sample at p(unknown) = t, so the new class hovers near the boundary (the share of it
    above t swings between about 0.3 and 1.0 from epoch to epoch, traced) and the last epoch
    decides. A seed-pinned recall >= 0.8 would test
    seed 0's luck, so the bounds below are ones every seed meets, from the spread above: recall
    >= 0.25 (mean - 2.5 sd; lowest seen 0.444), OS* >= 0.8 (lowest 0.866), an OS gain > 0
    (lowest +0.015; mean - 1.6 sd) and the source-only model's recall 0. Seeds 0-2 run here
    (recall 0.944, 0.542, 0.528).

    The issue's bar (recall >= 0.8 on a clear case) is met by the ``support`` method
    (:func:`test_open_set_support_flags_a_planted_unknown_class`), not by OSBP: an audit against
    the paper found no bug (K+1 softmax, BCE to t = 0.5, reversal on the trunk only, weight 1,
    argmax test rule, no target label read), and neither a clearer planted case nor nine
    training choices made recall >= 0.8 on every seed -- see ``benchmarks/RESULTS.md``,
    "Open-set: OSBP" and "Open-set: OSBP's training choices".

    Key step removed -- OSBP's adversarial term (``trade_off: 0``: the adaptation stage trains
    on the source loss alone): unknown recall 0.000, predicted unknown 0.000 (seed 0), so the
    recall assertion fails.
    """
    monkeypatch.setattr("tlroutes.runner.build_report", lambda *a, **k: None, raising=False)
    rng = np.random.default_rng(0)
    source = [open_set_data(rng, n, [0, 1, 2], 0.0) for n in (500, 200, 500)]
    target = [open_set_data(rng, n, [0, 1, 2, 3], 0.5) for n in (500, 200, 500)]
    summary = run_summary(
        tmp_path, "osbp", seed=seed,
        source={"dataset": save(tmp_path / "s.npz", source, ["a", "b", "c"]),
                "domain": "upright"},
        target={"dataset": save(tmp_path / "t.npz", target, ["a", "b", "c", "new"]),
                "domain": "shifted"},
        recipe={"variant_args": {"method": "osbp"}},
        source_training={"epochs": 20, "batch_size": 64, "lr": 0.01},
        target_training={"epochs": 20, "batch_size": 64, "lr": 0.01})
    assert summary["variant"] == "open_set" and summary["method"] == "osbp"
    assert summary["unknown_classes"] == ["new"]
    assert summary["primary_metric"] == "os"
    assert summary["baseline"]["unknown_recall"] == 0.0
    assert summary["metrics"]["unknown_recall"] >= 0.25
    assert summary["metrics"]["os_star"] >= 0.8
    assert summary["gain"] > 0


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_open_set_support_flags_a_planted_unknown_class(tmp_path, monkeypatch, seed):
    """The problem of :func:`test_open_set_flags_a_planted_unknown_class`, with the open-set
    variant's ``support`` method: the new class, which no source sample resembles, is flagged
    unknown with recall >= 0.8 (the issue's bar) on every seed, and the known classes stay
    right.

    ``support`` is the open-set variant's default, so ``variant_args`` is left out here.

    Measured (500 test samples; run seeds 0-7, data seed 0; 2026-11-30): unknown recall 1.00 on
    seeds 0-6 and 0.44 on seed 7 (there the source-trained features hardly tell the new class
    apart: the support classifier's loss stays at log 2 for 12 of 20 epochs); OS* 0.85-0.98;
    OS gain +0.09 to +0.25. An earlier state of this code (the same method, numerically
    different) gave recall 1.00 on all eight and OS* 0.91-0.99: the bounds leave room for that
    spread. They are recall >= 0.8 (the issue's bar), OS* >= 0.75 (lowest seen 0.85) and a
    positive gain; seeds 0-2 run here (recall 1.00, 1.00, 1.00; OS* 0.98, 0.98, 0.89).

    Key step removed -- the unsupported samples' cross-entropy to unknown
    (``unknown_weight: 0``): recall 0.00 (seed 0), so the recall assertion fails. With
    ``support_threshold: 0.5`` (not the derived 1/4) OS* falls to 0.47 (seed 0): known samples
    are called unknown.
    """
    monkeypatch.setattr("tlroutes.runner.build_report", lambda *a, **k: None, raising=False)
    rng = np.random.default_rng(0)
    source = [open_set_data(rng, n, [0, 1, 2], 0.0) for n in (500, 200, 500)]
    target = [open_set_data(rng, n, [0, 1, 2, 3], 0.5) for n in (500, 200, 500)]
    summary = run_summary(
        tmp_path, "support", seed=seed,
        source={"dataset": save(tmp_path / "s.npz", source, ["a", "b", "c"]),
                "domain": "upright"},
        target={"dataset": save(tmp_path / "t.npz", target, ["a", "b", "c", "new"]),
                "domain": "shifted"},
        source_training={"epochs": 20, "batch_size": 64, "lr": 0.01},
        target_training={"epochs": 20, "batch_size": 64, "lr": 0.01})
    assert summary["variant"] == "open_set" and summary["method"] == "support"
    assert summary["support_threshold"] == SUPPORT_THRESHOLD
    assert summary["baseline"]["unknown_recall"] == 0.0
    assert summary["metrics"]["unknown_recall"] >= 0.8
    assert summary["metrics"]["os_star"] >= 0.75
    assert summary["gain"] > 0
    # The run folder's model predicts "unknown" by name on new target inputs, as scored.
    from tlroutes.use.predictor import load

    names = load(tmp_path / "support").predict(target[2][0].astype(np.float32))
    assert float(np.mean(names == "unknown")) == pytest.approx(
        summary["metrics"]["predicted_unknown"], abs=1e-6)  # a float32 share


@pytest.mark.parametrize(("args", "match"), [
    ({"method": "osbbp"}, r"must be one of support, osbp.*Did you mean 'osbp'"),
    ({"method": "support", "support_threshold": 0.7}, r"support_threshold must lie in \(0, 0.5\]"),
    ({"method": "support", "unknown_weight": -1.0}, "unknown_weight must be 0 or more"),
])
def test_open_set_method_options_are_checked(tmp_path, args, match):
    rng = np.random.default_rng(0)
    source = [open_set_data(rng, 30, [0, 1, 2], 0.0) for _ in range(3)]
    target = [open_set_data(rng, 30, [0, 1, 2, 3], 0.5) for _ in range(3)]
    with pytest.raises(ConfigError, match=match):
        run_summary(tmp_path, "bad",
                    source={"dataset": save(tmp_path / "s.npz", source, ["a", "b", "c"]),
                            "domain": "upright"},
                    target={"dataset": save(tmp_path / "t.npz", target, ["a", "b", "c", "new"]),
                            "domain": "shifted"},
                    recipe={"variant_args": args},
                    source_training={"epochs": 1}, target_training={"epochs": 1})


# ---------------------------------------------------------------- declared labels against present


@pytest.mark.parametrize(("labels", "ys", "match"), [
    # three names, classes 0..4 present: which indices, where, and how many names are needed
    (["a", "b", "c"], ([0, 1, 2, 3, 4, 4], [0, 3], [1, 2]),
     r"names 3 classes \(0: a, 1: b, 2: c\) but the data hold class indices 3, 4 .*"
     r"3: 1 in train, 1 in val; 4: 2 in train.*needs 5 names"),
    # a list missing one class that is present (the last)
    (["a", "b"], ([0, 1, 2], [0], [1]), r"class index 2 .*2: 1 in train.*needs 3 names"),
    # a negative index has no name in any list
    (["a", "b"], ([0, 1, -1], [0], [1]), r"class index -1 .*renumber the negative ones"),
])
def test_a_declared_label_list_that_contradicts_the_labels_present(tmp_path, labels, ys, match):
    from tlroutes.config import DataSpec
    from tlroutes.data.load import load_problem
    from tlroutes.errors import DataError

    splits = [(np.zeros((len(y), 2)), np.array(y)) for y in ys]
    path = save(tmp_path / "p.npz", splits, labels)
    with pytest.raises(DataError, match=match) as error:
        load_problem(DataSpec(dataset=path), 0, "target")
    assert str(path) in str(error.value)
