"""Domain-alignment losses and label-free validators: known answers.

The family's values test comes first: one table, one row per (method, setting), each with inputs
built so that the right value is known in closed form or from a few lines of hand arithmetic. A
new alignment loss joins the family with one row there (``test_every_method_has_a_row`` checks).
Reference values are computed independently (closed forms, numpy loops), never by calling the
code under test a second time.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from tlroutes.errors import ConfigError, DataError
from tlroutes.matrix import Route
from tlroutes.objectives.alignment import (
    ALIGNMENTS,
    ConditionalDomainAdversarialLoss,
    CorrelationAlignmentLoss,
    DomainAdversarialLoss,
    DomainDiscriminator,
    GaussianKernel,
    GradientReverse,
    JointMultipleKernelMMD,
    MinimumClassConfusionLoss,
    MultipleKernelMMD,
    RandomizedMultilinearMap,
    WarmStartGradientReverse,
    create_alignment,
    entropy_weights,
    list_alignments,
    multilinear_map,
)
from tlroutes.objectives.alignment.registry import AlignmentRegistry
from tlroutes.objectives.validators import (
    VALIDATORS,
    entropy,
    information_maximization,
    negative_entropy,
    soft_neighborhood_density,
)
from tlroutes.routes.common import parse_recipe
from tlroutes.routes.domain_adaptation import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _lam(p: float, gamma: float = 10.0, lo: float = 0.0, hi: float = 1.0) -> float:
    """The DANN schedule, written out independently."""
    return lo + (hi - lo) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


# --------------------------------------------------------------------------- the values table


def _t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _sp(z: float) -> float:
    """softplus: BCE(logit z, label 1) = sp(-z), BCE(z, 0) = sp(z)."""
    return math.log1p(math.exp(z))


def _linear(*weights: float) -> nn.Linear:
    """A fixed discriminator ``Linear(len(weights), 1)`` with these weights and bias 0."""
    layer = nn.Linear(len(weights), 1).double()
    with torch.no_grad():
        layer.weight.copy_(_t(weights))
        layer.bias.zero_()
    return layer


def _inputs(f_s, f_t, g_s=None, g_t=None, classes: int = 2):
    """(f_s, f_t, g_s, g_t); absent logits are zeros (a method that reads none ignores them)."""
    g_s = torch.zeros(len(f_s), classes, dtype=torch.float64) if g_s is None else g_s
    g_t = torch.zeros(len(f_t), classes, dtype=torch.float64) if g_t is None else g_t
    return f_s, f_t, g_s, g_t


# Two point masses in 2-D, source at 0 and target at (3, 4) (squared distance 25), two samples
# each. DAN's default bandwidths are σ² = 2^k · mean squared distance over the 12 ordered pairs
# of distinct points (8 cross pairs at 25, 4 within at 0): 2^k · 50/3. A cross pair then has
# kernel exp(-25 / (2 · 2^k · 50/3)) = exp(-3 / 2^(k+2)) whatever the distance; a within pair 1.
POINT_S = torch.zeros(2, 2, dtype=torch.float64)
POINT_T = _t([3.0, 4.0], [3.0, 4.0])
CROSS = sum(math.exp(-3.0 / 2.0 ** (k + 2)) for k in range(-3, 2))
# Linear-time: the one quad-tuple's four distances are 0, 0, 25, 25 (mean 12.5): a cross pair
# has kernel exp(-25 / (2 · 2^k · 12.5)) = exp(-2^-k).
CROSS_LINEAR = sum(math.exp(-(2.0 ** -k)) for k in range(-3, 2))
# JAN's Gaussian on softmax outputs, σ = 0.92: one-hot predictions of different classes are
# √2 apart, so k = exp(-2 / (2 · 0.92²)).
K_PRED = math.exp(-1.0 / 0.92**2)
CLASS_0, CLASS_1 = _t([50.0, 0.0], [50.0, 0.0]), _t([0.0, 50.0], [0.0, 50.0])

VALUES = [
    # DANN: a discriminator reading the first feature; per-domain BCE means, then averaged.
    pytest.param(
        "dann", {"discriminator": _linear(1.0, 0.0)},
        _inputs(_t([2.0, 0.0], [-1.0, 0.0]), _t([-3.0, 0.0], [1.0, 0.0], [0.5, 0.0])),
        0.5 * ((_sp(-2) + _sp(1)) / 2 + (_sp(-3) + _sp(1) + _sp(0.5)) / 3),
        id="dann-fixed-discriminator",
    ),
    # CORAL: source cov diag(2, 0) (n = 2), target cov diag(0, 1) (n = 3, unbiased):
    # ‖diag(2, -1)‖² / (4 · 2²) = 5/16.
    pytest.param(
        "coral", {}, _inputs(_t([0.0, 0.0], [2.0, 0.0]), _t([0.0, 0.0], [0.0, 1.0], [0.0, 2.0])),
        5 / 16, id="coral-known-covariances",
    ),
    # MK-MMD, unbiased: within pairs give 5 (five kernels at 1), cross pairs CROSS.
    pytest.param("mmd", {}, _inputs(POINT_S, POINT_T), 10 - 2 * CROSS, id="mmd-point-masses"),
    pytest.param(
        "mmd", {"linear": True}, _inputs(POINT_S, POINT_T), 10 - 2 * CROSS_LINEAR,
        id="mmd-linear-point-masses",
    ),
    # Identical point masses: every kernel value is 1 (the bandwidth's floor keeps 0/0 away).
    pytest.param("mmd", {}, _inputs(POINT_S, POINT_S.clone()), 0.0, id="mmd-same-points"),
    # CDAN+E, D = 1, K = 2, discriminator on T = (p0·f, p1·f) with weights (1, -1): logit
    # z = (p0 - p1)·f. Source: classes 0, 1 at f = 2, -1 -> z = 2, 1, weights 2, 2 -> 1, 1.
    # Target: classes 0, 1, uniform at f = -3, 1, 4 -> z = -3, -1, 0; certainty weights
    # 2, 2, 1 + 1/2 normalised per domain to mean 1: 12/11, 12/11, 9/11.
    pytest.param(
        "cdan", {"discriminator": _linear(1.0, -1.0)},
        _inputs(_t([2.0], [-1.0]), _t([-3.0], [1.0], [4.0]),
                _t([50.0, 0.0], [0.0, 50.0]), _t([50.0, 0.0], [0.0, 50.0], [0.0, 0.0])),
        0.5 * ((_sp(-2) + _sp(-1)) / 2
               + (12 / 11 * _sp(-3) + 12 / 11 * _sp(-1) + 9 / 11 * math.log(2)) / 3),
        id="cdan-fixed-discriminator",
    ),
    # MCC, uniform predictions over K = 4: every normalised row is 1/4 -> (K - 1)/K.
    pytest.param(
        "mcc", {}, _inputs(torch.zeros(6, 1), torch.zeros(6, 1), g_t=torch.zeros(6, 4)), 0.75,
        id="mcc-uniform",
    ),
    # MCC, confident predictions of five distinct classes: no confusion.
    pytest.param(
        "mcc", {}, _inputs(torch.zeros(5, 1), torch.zeros(5, 1), g_t=100.0 * torch.eye(5)), 0.0,
        id="mcc-one-hot",
    ),
    # MCC by hand, K = 2, T = 1: p1 = (1, 0), p2 = (1/2, 1/2); w ∝ (2, 1.5) -> (8/7, 6/7);
    # C = [[8/7 + 3/14, 3/14], [3/14, 3/14]] -> rows [[19/22, 3/22], [1/2, 1/2]] -> 7/22.
    pytest.param(
        "mcc", {"temperature": 1.0},
        _inputs(torch.zeros(2, 1), torch.zeros(2, 1), g_t=_t([100.0, 0.0], [0.0, 0.0])), 7 / 22,
        id="mcc-by-hand",
    ),
    # Class-weighted MCC starts with weights 1: MCC itself (row mcc-by-hand's value).
    pytest.param(
        "weighted_mcc", {"temperature": 1.0},
        _inputs(torch.zeros(2, 1), torch.zeros(2, 1), g_t=_t([100.0, 0.0], [0.0, 0.0])), 7 / 22,
        id="weighted-mcc-unit-weights-is-mcc",
    ),
    # JAN: the point masses, the source predicting class 0 and the target class 1. Within pairs
    # 5 · 1, cross pairs CROSS · K_PRED (the joint kernel is the product of the layers' kernels).
    pytest.param(
        "jan", {}, _inputs(POINT_S, POINT_T, CLASS_0, CLASS_1), 10 - 2 * CROSS * K_PRED,
        id="jan-point-masses",
    ),
    # JAN sees what MMD cannot: the same features (MMD 0, row mmd-same-points) with other
    # predictions.
    pytest.param(
        "jan", {}, _inputs(POINT_S, POINT_S.clone(), CLASS_0, CLASS_1), 10 - 10 * K_PRED,
        id="jan-same-features-other-predictions",
    ),
]


@pytest.mark.parametrize(("method", "options", "inputs", "expected"), VALUES)
def test_known_values(method, options, inputs, expected):
    f_s, f_t, g_s, g_t = inputs
    loss = create_alignment(method, features=f_s.shape[1], classes=g_s.shape[1], max_steps=10,
                            **options)
    assert loss(f_s, f_t, g_s, g_t).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_every_method_has_a_row():
    rows = {p.values[0] for p in VALUES}
    missing = set(list_alignments()) - rows
    assert not missing, f"add a known-value row to VALUES for {sorted(missing)}"


# --------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("method", list_alignments())
def test_every_method_takes_the_family_call_and_trains_the_features(method):
    torch.manual_seed(0)
    loss = create_alignment(method, features=5, classes=3, max_steps=1)
    f_s, f_t = torch.randn(8, 5), torch.randn(8, 5) + 1
    g_s, g_t = torch.randn(8, 3), torch.randn(8, 3)
    for x in (f_s, f_t, g_s, g_t):
        x.requires_grad_()
    loss(f_s, f_t, g_s, g_t)  # one step, so that a warm-up schedule (DANN, CDAN) is past 0
    value = loss(f_s, f_t, g_s, g_t)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    # Some gradient reaches what the trunk or the head produced: the loss can train them.
    grads = [x.grad for x in (f_s, f_t, g_s, g_t) if x.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_needs_classification_comes_from_the_registration():
    assert {n for n in list_alignments() if ALIGNMENTS.needs_classification(n)} == {
        "cdan", "mcc", "jan", "weighted_mcc"}
    ALIGNMENTS.check_task("cdan", "classification")
    ALIGNMENTS.check_task("coral", "regression")
    with pytest.raises(ConfigError, match="use one of: coral, dann, mmd"):
        ALIGNMENTS.check_task("jan", "regression")


def test_registry_errors_name_what_to_do():
    with pytest.raises(ConfigError, match="Did you mean 'dann'"):
        create_alignment("dan", features=2, classes=2, max_steps=1)
    with pytest.raises(ConfigError, match="no argument 'temp'.*accepts: temperature"):
        create_alignment("mcc", features=2, classes=2, max_steps=1, temp=1.0)
    with pytest.raises(ConfigError, match="set by the route"):
        ALIGNMENTS.check_options("mmd", {"features": 3})

    registry = AlignmentRegistry()  # a private one: the global table stays as it is

    @registry.register("mine", needs_classification=True)
    def build(*, features: int, classes: int, max_steps: int, scale: float = 1.0) -> nn.Module:
        return CorrelationAlignmentLoss()

    assert registry.names() == ["mine"] and registry.needs_classification("mine")
    assert isinstance(registry.build("mine", features=1, classes=1, max_steps=1, scale=2.0),
                      CorrelationAlignmentLoss)
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("mine")(lambda *, features, classes, max_steps: nn.Identity())
    with pytest.raises(ConfigError, match="must take \\(features, classes, max_steps\\) first"):
        registry.register("bad")(lambda *, width: nn.Identity())


def test_the_route_reads_its_methods_from_the_registry():
    def recipe(**fields):
        return parse_recipe(Recipe, fields, Route.DOMAIN_ADAPTATION)

    assert recipe(method="jan", method_args={"linear": True}).method_args == {"linear": True}
    assert recipe(method="source_only").method == "source_only"
    with pytest.raises(ConfigError, match="Did you mean 'coral'.*source_only, cdan, coral"):
        recipe(method="corall")
    with pytest.raises(ConfigError, match="no argument 'gama'.*Did you mean 'gamma'"):
        recipe(method="dann", method_args={"gama": 5.0})
    with pytest.raises(ConfigError, match="source_only"):
        recipe(method="source_only", method_args={"linear": True})


# --------------------------------------------------------------------------- gradient reversal


def _reversed_grad(layer: nn.Module, upstream: torch.Tensor) -> torch.Tensor:
    x = torch.randn(upstream.shape, requires_grad=True)
    y = layer(x)
    assert torch.equal(y, x)  # identity forward
    (y * upstream).sum().backward()
    return x.grad


def test_grl_backward_is_minus_lambda_times_upstream_along_the_schedule():
    torch.manual_seed(0)
    grl = WarmStartGradientReverse(max_steps=100)
    up = torch.randn(5, 3)
    # step 0: p = 0, λ = 0
    assert torch.allclose(_reversed_grad(grl, up), torch.zeros_like(up))
    assert int(grl.num_steps) == 1  # auto-stepped in training mode
    # mid-way: p = 0.5, λ = tanh(2.5) ≈ 0.98661
    grl.num_steps.fill_(50)
    assert grl.coefficient() == pytest.approx(math.tanh(2.5), abs=1e-12)
    assert torch.allclose(_reversed_grad(grl, up), -_lam(0.5) * up, atol=1e-6)
    # end and beyond: p clipped to 1, λ = tanh(5) ≈ 0.99991
    for step in (100, 250):
        grl.num_steps.fill_(step)
        assert torch.allclose(_reversed_grad(grl, up), -_lam(1.0) * up, atol=1e-6)
    assert _lam(1.0) == pytest.approx(0.99991, abs=1e-5)
    # another range and steepness
    grl2 = WarmStartGradientReverse(max_steps=10, gamma=4.0, lo=0.2, hi=0.7)
    grl2.num_steps.fill_(3)
    expected = _lam(0.3, gamma=4.0, lo=0.2, hi=0.7)
    assert torch.allclose(_reversed_grad(grl2, up), -expected * up, atol=1e-6)


def test_grl_counts_only_training_forwards_and_plain_function_reverses():
    grl = WarmStartGradientReverse(max_steps=10)
    grl(torch.ones(2))
    grl(torch.ones(2))
    grl.eval()
    grl(torch.ones(2))
    assert int(grl.num_steps) == 2
    manual = WarmStartGradientReverse(auto_step=False)
    manual(torch.ones(2))
    manual.step()
    assert int(manual.num_steps) == 1
    x = torch.ones(3, requires_grad=True)
    GradientReverse.apply(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))


def test_grl_step_counter_is_a_persistent_buffer_restored_by_load_state_dict():
    grl = WarmStartGradientReverse(max_steps=100)
    for _ in range(37):
        grl(torch.ones(1))
    state = grl.state_dict()
    assert "num_steps" in state and int(state["num_steps"]) == 37
    fresh = WarmStartGradientReverse(max_steps=100)
    fresh.load_state_dict(state)
    assert int(fresh.num_steps) == 37
    assert fresh.coefficient() == grl.coefficient() == pytest.approx(_lam(0.37))
    assert "grl.num_steps" in DomainAdversarialLoss(4).state_dict()
    assert "grl.num_steps" in ConditionalDomainAdversarialLoss(4, 3).state_dict()


def test_dann_resume_is_bit_identical():
    torch.manual_seed(0)
    enc = nn.Linear(6, 4)
    dann = DomainAdversarialLoss(4, hidden=8, max_steps=20)
    params = [*enc.parameters(), *dann.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    data = [(torch.randn(8, 6), torch.randn(8, 6) + 1) for _ in range(10)]

    def train(enc, dann, opt, batches):
        losses = []
        for xs, xt in batches:
            loss = dann(enc(xs), enc(xt))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    train(enc, dann, opt, data[:5])
    saved = copy.deepcopy((enc.state_dict(), dann.state_dict(), opt.state_dict()))
    straight = train(enc, dann, opt, data[5:])

    enc2, dann2 = nn.Linear(6, 4), DomainAdversarialLoss(4, hidden=8, max_steps=20)
    opt2 = torch.optim.SGD([*enc2.parameters(), *dann2.parameters()], lr=0.1, momentum=0.9)
    enc2.load_state_dict(saved[0])
    dann2.load_state_dict(saved[1])
    opt2.load_state_dict(saved[2])
    assert int(dann2.grl.num_steps) == 5
    assert train(enc2, dann2, opt2, data[5:]) == straight
    assert torch.equal(enc2.weight, enc.weight)


# --------------------------------------------------------------------------- DANN


def test_dann_reports_the_discriminators_domain_accuracy():
    class Const(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 1) + 0.0 * x.sum(1, keepdim=True)

    loss = DomainAdversarialLoss(Const())
    assert loss(torch.randn(3, 2), torch.randn(5, 2)).item() == pytest.approx(math.log(2.0))
    # logit 0 -> predicted "target": right on target, wrong on source.
    assert loss.last_accuracy == pytest.approx(0.5)
    # Reading the first feature: source 2 (right), -1 (wrong); target -3 (right), 1, 0.5 (wrong).
    dl = DomainAdversarialLoss(discriminator=_linear(1.0, 0.0))
    dl(_t([2.0, 0.0], [-1.0, 0.0]), _t([-3.0, 0.0], [1.0, 0.0], [0.5, 0.0]))
    assert dl.last_accuracy == pytest.approx(0.5 * (1 / 2 + 1 / 3))


def test_domain_discriminator_shapes_and_bad_arguments():
    assert DomainDiscriminator(7)(torch.randn(4, 7)).shape == (4, 1)
    assert DomainDiscriminator(7, depth=0)(torch.randn(4, 7)).shape == (4, 1)
    assert DomainDiscriminator(7, batch_norm=False)(torch.randn(1, 7)).shape == (1, 1)
    with pytest.raises(ConfigError):
        DomainAdversarialLoss()
    with pytest.raises(ConfigError):
        WarmStartGradientReverse(max_steps=0)
    with pytest.raises(DataError, match="same width"):
        DomainAdversarialLoss(3)(torch.randn(4, 3), torch.randn(4, 2))


N_NOISE = 20  # nuisance input dimensions, so the features have spread in every direction


def _shift_problem(n: int, domain: int, g: torch.Generator):
    """x = [signal, 20 noise dims, spurious u, domain flag], two classes.

    The signal (±1.5 + N(0, 1)) means the same in both domains. The spurious feature u is
    ±1 + N(0, 0.5) with the label in the source, so a source-only model leans on it, but sits at
    6 + N(0, 0.5) whatever the label in the target. The last feature *is* the domain label.
    """
    y = torch.randint(0, 2, (n,), generator=g)
    sign = 2.0 * y - 1.0
    s = torch.randn(n, 1 + N_NOISE, generator=g)
    s[:, 0] += 1.5 * sign
    u = (1.0 * sign if domain == 0 else torch.full((n,), 6.0)) + 0.5 * torch.randn(n, generator=g)
    flag = torch.full((n, 1), float(domain))
    return torch.cat([s, u[:, None], flag], dim=1), y


def _train_shift(seed: int, adapt: bool, steps: int):
    g = torch.Generator().manual_seed(seed)
    xs, ys = _shift_problem(2000, 0, g)
    xt, yt = _shift_problem(2000, 1, g)
    torch.manual_seed(seed)
    # A linear encoder: "domain information in the features" then has one clear meaning.
    encoder = nn.Linear(xs.shape[1], 8)
    classifier = nn.Linear(8, 2)
    dann = DomainAdversarialLoss(8, hidden=32, depth=2, max_steps=steps)
    opt = torch.optim.Adam(
        [*encoder.parameters(), *classifier.parameters(), *dann.parameters()], lr=1e-2
    )
    # DANN's learning-rate annealing, lr_p = lr_0 / (1 + 10 p)^0.75, lets the game settle.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: (1 + 10 * k / steps) ** -0.75)
    for _ in range(steps):
        i = torch.randint(0, 2000, (128,), generator=g)
        j = torch.randint(0, 2000, (128,), generator=g)
        f_s, f_t = encoder(xs[i]), encoder(xt[j])
        loss = F.cross_entropy(classifier(f_s), ys[i])
        if adapt:
            loss = loss + dann(f_s, f_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        target_error = (classifier(encoder(xt)).argmax(1) != yt).float().mean().item()
        feats = torch.cat([encoder(xs), encoder(xt)]).numpy()
    domain = np.r_[np.zeros(2000), np.ones(2000)]
    order = np.random.RandomState(seed).permutation(4000)
    train, test = order[:3000], order[3000:]
    probe = LogisticRegression(max_iter=5000).fit(feats[train], domain[train])
    return target_error, probe.score(feats[test], domain[test])


@pytest.mark.parametrize("seed", [0, 1])
def test_dann_removes_the_domain_feature_and_lowers_target_error(seed):
    src_error, src_probe = _train_shift(seed, adapt=False, steps=150)
    dann_error, dann_probe = _train_shift(seed, adapt=True, steps=300)
    # Source-only: the features show the domain, and the spurious feature sends every target
    # sample to class 1 (error ≈ 50 %).
    # (seeds 0-7 give probe >= 0.989, error >= 0.48)
    assert src_probe > 0.97
    assert src_error > 0.4
    # DANN: a fresh probe tells the domains apart far less well (seeds 0-7: <= 0.78, mean 0.73),
    # and the target error falls to near the signal's Bayes error Φ(-1.5) ≈ 6.7 % (seeds 0-7:
    # <= 0.11). With the reversal's sign flipped the probe scores 1.0 and the error stays ≈ 50 %.
    assert dann_probe < 0.85
    assert dann_error < 0.2
    assert dann_error < src_error - 0.25


# --------------------------------------------------------------------------- CORAL


def test_coral_ignores_shifts_and_matches_numpy():
    x = torch.randn(10, 4, dtype=torch.float64)
    coral = CorrelationAlignmentLoss()
    assert coral(x, x.clone()).item() == pytest.approx(0.0, abs=1e-15)
    # a shift does not change a covariance
    assert coral(x, x + 3.0).item() == pytest.approx(0.0, abs=1e-12)

    rng = np.random.RandomState(0)
    xs, xt = rng.randn(6, 3), 2.0 * rng.randn(9, 3) + 1.0
    cs, ct = np.cov(xs, rowvar=False), np.cov(xt, rowvar=False)
    expected = ((cs - ct) ** 2).sum() / (4 * 3**2)
    got = coral(torch.from_numpy(xs), torch.from_numpy(xt)).item()
    assert got == pytest.approx(expected, rel=1e-12)
    with pytest.raises(DataError, match="at least 2"):
        coral(torch.randn(1, 3), torch.randn(4, 3))


# --------------------------------------------------------------------------- MMD and JAN


def _numpy_mmd_unbiased(zs, zt, k):
    """The unbiased MMD² of samples ``zs``, ``zt`` (sequences of points) under kernel ``k``."""
    n, m = len(zs), len(zt)
    ss = sum(k(zs[i], zs[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    tt = sum(k(zt[i], zt[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    st = sum(k(zs[i], zt[j]) for i in range(n) for j in range(m)) / (n * m)
    return ss + tt - 2 * st


def _gaussians(sigmas2):
    return lambda a, b: sum(np.exp(-((a - b) ** 2).sum() / (2 * s2)) for s2 in sigmas2)


def _dan_sigmas2(xs, xt):
    """σ² = 2^k · mean squared distance over distinct pairs of the joint batch, k = -3..1."""
    z = np.r_[xs, xt]
    d2 = [((z[i] - z[j]) ** 2).sum() for i in range(len(z)) for j in range(len(z)) if i != j]
    return [2.0**k * np.mean(d2) for k in range(-3, 2)]


def test_mmd_matches_numpy_on_tiny_cases():
    rng = np.random.RandomState(1)
    xs, xt = rng.randn(4, 3), rng.randn(5, 3) + 0.5
    ts, tt = torch.from_numpy(xs), torch.from_numpy(xt)
    # fixed bandwidths
    mmd = MultipleKernelMMD([GaussianKernel(sigma=1.0), GaussianKernel(sigma=2.0)])
    expected = _numpy_mmd_unbiased(xs, xt, _gaussians([1.0, 4.0]))
    assert mmd(ts, tt).item() == pytest.approx(expected, rel=1e-10)
    # default family
    expected = _numpy_mmd_unbiased(xs, xt, _gaussians(_dan_sigmas2(xs, xt)))
    assert MultipleKernelMMD()(ts, tt).item() == pytest.approx(expected, rel=1e-10)

    # linear-time estimator: quad-tuples (x1, x2, y1, y2), (x3, x4, y3, y4)
    xs4, xt4 = rng.randn(4, 2), rng.randn(4, 2)
    k = _gaussians([1.0])
    h = [
        k(xs4[a], xs4[b]) + k(xt4[a], xt4[b]) - k(xs4[a], xt4[b]) - k(xs4[b], xt4[a])
        for a, b in ((0, 1), (2, 3))
    ]
    lin = MultipleKernelMMD([GaussianKernel(sigma=1.0)], linear=True)
    got = lin(torch.from_numpy(xs4), torch.from_numpy(xt4)).item()
    assert got == pytest.approx(np.mean(h), rel=1e-10)


def test_mmd_near_zero_for_same_distribution_and_positive_for_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 5, generator=g), torch.randn(400, 5, generator=g)
    shifted = torch.randn(400, 5, generator=g) + 1.0
    for linear in (False, True):
        mmd = MultipleKernelMMD(linear=linear)
        same, diff = mmd(a, b).item(), mmd(a, shifted).item()
        assert abs(same) < 0.05, (linear, same)
        assert diff > 0.3, (linear, diff)
        assert diff > 10 * abs(same)


def test_mmd_linear_needs_equal_batches():
    with pytest.raises(ConfigError, match="same size"):
        MultipleKernelMMD(linear=True)(torch.randn(4, 2), torch.randn(6, 2))
    assert torch.isfinite(MultipleKernelMMD()(torch.randn(4, 2), torch.randn(6, 2)))


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_jan_matches_a_numpy_joint_kernel_on_random_inputs():
    rng = np.random.RandomState(2)
    xs, xt = rng.randn(4, 3), rng.randn(5, 3) + 0.5
    gs, gt = 2 * rng.randn(4, 3), 2 * rng.randn(5, 3)
    ps, pt = _softmax(gs), _softmax(gt)
    k_f, k_p = _gaussians(_dan_sigmas2(xs, xt)), _gaussians([0.92**2])
    joint = lambda a, b: k_f(a[0], b[0]) * k_p(a[1], b[1])  # noqa: E731
    expected = _numpy_mmd_unbiased(list(zip(xs, ps, strict=True)),
                                   list(zip(xt, pt, strict=True)), joint)
    got = JointMultipleKernelMMD()(*map(torch.from_numpy, (xs, xt, gs, gt))).item()
    assert got == pytest.approx(expected, rel=1e-10)

    # linear-time: one quad-tuple (x1, x2, y1, y2) per pair of rows, fixed bandwidths
    xs4, xt4, gs4, gt4 = rng.randn(4, 2), rng.randn(4, 2), rng.randn(4, 3), rng.randn(4, 3)
    ps4, pt4 = _softmax(gs4), _softmax(gt4)
    k1 = _gaussians([1.0])

    def k(a, b, c, d):  # joint kernel of (features a, probabilities b) and (c, d)
        return k1(a, c) * k_p(b, d)

    h = [
        k(xs4[a], ps4[a], xs4[b], ps4[b]) + k(xt4[a], pt4[a], xt4[b], pt4[b])
        - k(xs4[a], ps4[a], xt4[b], pt4[b]) - k(xs4[b], ps4[b], xt4[a], pt4[a])
        for a, b in ((0, 1), (2, 3))
    ]
    lin = JointMultipleKernelMMD([GaussianKernel(sigma=1.0)], linear=True)
    got = lin(*map(torch.from_numpy, (xs4, xt4, gs4, gt4))).item()
    assert got == pytest.approx(np.mean(h), rel=1e-10)


def test_jan_trains_features_and_classifier_and_checks_its_logits():
    jan = JointMultipleKernelMMD()
    f_s, f_t = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    g_s, g_t = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    jan(f_s, f_t, g_s, g_t).backward()
    # As in the paper, the joint discrepancy adapts the classifier layer too.
    assert all(x.grad.abs().sum() > 0 for x in (f_s, f_t, g_s, g_t))
    with pytest.raises(DataError, match="logits of shape"):
        jan(f_s, f_t, g_s, torch.randn(6, 2))
    with pytest.raises(DataError, match="logits of shape"):
        jan(f_s, f_t, g_s[:5], g_t)


# --------------------------------------------------------------------------- MCC


def _numpy_mcc(logits, temperature):
    p = _softmax(logits / temperature)
    h = -(p * np.log(p)).sum(1)
    w = 1 + np.exp(-h)
    w = len(p) * w / w.sum()
    c = (p * w[:, None]).T @ p
    c = c / c.sum(1, keepdims=True)
    return (c.sum() - np.trace(c)) / p.shape[1]


def test_mcc_matches_numpy_and_handles_absent_classes():
    mcc = MinimumClassConfusionLoss()
    # 3 confident samples, K = 5: the two absent classes' rows (tiny probabilities) normalise to
    # (1/3, 1/3, 1/3, 0, 0), each adding 1 off the diagonal -> 2 / 5
    assert mcc(100.0 * torch.eye(3, 5)).item() == pytest.approx(0.4, abs=1e-6)
    # exactly zero columns stay zero rather than NaN
    assert MinimumClassConfusionLoss(temperature=0.01)(100.0 * torch.eye(3, 5)).item() == 0.0
    rng = np.random.RandomState(3)
    logits = rng.randn(7, 4) * 3
    got = mcc(torch.from_numpy(logits)).item()
    assert got == pytest.approx(_numpy_mcc(logits, 2.5), rel=1e-10)


def test_weighted_mcc_weighs_the_rows_by_hand():
    """Rows of mcc-by-hand: r = (3/22, 1/2); γ = (1, 1/2) gives (3/22 + 1/4) / (3/2). With γ = 0
    on the classes a confident batch lacks, their rows (1 each, test above) drop out: 0, where
    MCC reads 2/5 and pushes samples towards the absent classes."""
    loss = create_alignment("weighted_mcc", features=1, classes=2, max_steps=1, temperature=1.0)
    loss.set_class_weight(torch.tensor([1.0, 0.5]))
    g_t = _t([100.0, 0.0], [0.0, 0.0])
    value = loss(torch.zeros(2, 1), torch.zeros(2, 1), g_t, g_t).item()
    assert value == pytest.approx((3 / 22 + 1 / 4) / 1.5, rel=1e-9)
    five = create_alignment("weighted_mcc", features=1, classes=5, max_steps=1)
    g_t = 100.0 * torch.eye(3, 5)
    assert five(g_t, g_t, g_t, g_t).item() == pytest.approx(0.4, abs=1e-6)  # γ = 1: MCC
    five.set_class_weight(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))
    assert five(g_t, g_t, g_t, g_t).item() == pytest.approx(0.0, abs=1e-6)
    # γ is a buffer: saved and resumed with the module
    assert torch.equal(five.state_dict()["class_weight"], torch.tensor([1.0, 1, 1, 0, 0]))
    with pytest.raises(ValueError, match="shape"):
        five.set_class_weight(torch.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        five.set_class_weight(torch.zeros(5))


# --------------------------------------------------------------------------- CDAN


def test_multilinear_maps_shapes_and_values():
    f, g = torch.randn(3, 5), torch.softmax(torch.randn(3, 4), 1)
    out = multilinear_map(f, g)
    assert out.shape == (3, 20)
    assert out[1, 2 * 5 + 3] == pytest.approx((g[1, 2] * f[1, 3]).item())
    rmap = RandomizedMultilinearMap(5, 4, out_dim=64)
    assert rmap(f, g).shape == (3, 64)
    assert {"R_f", "R_g"} <= set(rmap.state_dict())
    assert list(rmap.parameters()) == []
    cdan = ConditionalDomainAdversarialLoss(5, 4, randomized=True, randomized_dim=64, hidden=16)
    assert cdan.discriminator[0].in_features == 64
    assert ConditionalDomainAdversarialLoss(5, 4, hidden=16).discriminator[0].in_features == 20
    # The registry entry randomizes above D·K = 4096, as the paper advises.
    assert create_alignment("cdan", features=65, classes=64, max_steps=1, hidden=8).randomized
    assert not create_alignment("cdan", features=64, classes=64, max_steps=1, hidden=8,
                                randomized=False).randomized


def test_cdan_entropy_weights_and_per_domain_normalisation():
    # uniform over K = 4: H = log 4, w = 1 + 1/4; one-hot: H = 0, w = 2
    p = torch.tensor([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(entropy_weights(p), torch.tensor([1.25, 2.0]))

    lin = nn.Linear(6, 1)  # discriminator on the (K·D = 3·2) map
    cdan = ConditionalDomainAdversarialLoss(2, 3, discriminator=lin)
    g_s, f_s = torch.randn(2, 3), torch.randn(2, 2)
    g_t, f_t = torch.randn(3, 3), torch.randn(3, 2)
    loss = cdan(g_s, f_s, g_t, f_t)

    def expected_part(g, f, label):
        p = torch.softmax(g, 1)
        h = -(p * p.log()).sum(1)
        w = 1 + torch.exp(-h)
        w = w / w.mean()
        z = lin(torch.stack([torch.outer(p[b], f[b]).flatten() for b in range(len(f))]))[:, 0]
        bce = F.binary_cross_entropy_with_logits(z, torch.full_like(z, label), reduction="none")
        return (w * bce).mean()

    expected = 0.5 * (expected_part(g_s, f_s, 1.0) + expected_part(g_t, f_t, 0.0))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    plain = ConditionalDomainAdversarialLoss(2, 3, entropy_conditioning=False, discriminator=lin)
    assert plain(g_s, f_s, g_t, f_t).item() != pytest.approx(loss.item())
    assert 0.0 <= cdan.last_accuracy <= 1.0


def test_cdan_gradient_reaches_features_not_predictions():
    cdan = ConditionalDomainAdversarialLoss(4, 3, hidden=16, max_steps=10)
    cdan.grl.num_steps.fill_(10)
    g_s, g_t = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    f_s, f_t = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    cdan(g_s, f_s, g_t, f_t).backward()
    assert g_s.grad is None and g_t.grad is None
    assert f_s.grad.abs().sum() > 0 and f_t.grad.abs().sum() > 0
    with pytest.raises(DataError, match="logits of shape"):
        cdan(torch.randn(6, 2), f_s, g_t, f_t)
    # The registry's entry takes the family call and keeps the plain loss's state keys.
    family = create_alignment("cdan", features=4, classes=3, max_steps=10, hidden=16)
    assert family.state_dict().keys() == cdan.state_dict().keys()


# --------------------------------------------------------------------------- validators


def test_information_maximization_known_answers():
    assert information_maximization(torch.zeros(5, 3)) == pytest.approx(0.0, abs=1e-12)
    onehot = torch.eye(4)
    assert information_maximization(onehot, is_probs=True) == pytest.approx(math.log(4))
    collapsed = torch.tensor([[1.0, 0.0]] * 3)
    assert information_maximization(collapsed, is_probs=True) == pytest.approx(0.0, abs=1e-12)
    # p1 = (1, 0), p2 = (1/2, 1/2): H(3/4, 1/4) - (0 + log 2) / 2
    mixed = np.array([[1.0, 0.0], [0.5, 0.5]])
    h_mean = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert information_maximization(mixed, is_probs=True) == pytest.approx(h_mean - math.log(2) / 2)
    with pytest.raises(DataError):
        information_maximization(mixed * 2, is_probs=True)


def test_entropy_scores():
    assert entropy(torch.zeros(3, 5)) == pytest.approx(math.log(5))
    assert negative_entropy(torch.zeros(3, 5)) == pytest.approx(-math.log(5))
    assert entropy(torch.eye(3), is_probs=True) == pytest.approx(0.0, abs=1e-12)
    assert set(VALIDATORS) == {"im", "snd", "neg_entropy"}


def test_soft_neighborhood_density_known_answers():
    # a = b = (1, 0), c = (0, 1): cosines a·b = 1, a·c = b·c = 0.
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    q = 1.0 / (1.0 + math.exp(-1.0 / tau))  # a's weight on b (vs c)
    h = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    expected = (2 * h + math.log(2)) / 3  # c sees a and b equally
    got = soft_neighborhood_density(probs, temperature=tau, is_probs=True)
    assert got == pytest.approx(expected, rel=1e-10)

    # against a plain numpy version (self excluded), chunked or not
    rng = np.random.RandomState(0)
    logits = rng.randn(9, 4)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    sim = p @ p.T / 0.05
    total = 0.0
    for i in range(9):
        row = np.delete(sim[i], i)
        row = np.exp(row - row.max())
        row /= row.sum()
        total += -(row * np.log(row)).sum()
    for chunk in (2, 1024):
        got = soft_neighborhood_density(torch.from_numpy(logits), chunk_size=chunk)
        assert got == pytest.approx(total / 9, rel=1e-9)
