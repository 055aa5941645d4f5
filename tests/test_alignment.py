"""Domain-adaptation losses and label-free validators: known answers.

Reference values are computed independently (numpy loops, closed forms by hand), never by calling
the code under test a second time.
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
from tlroutes.objectives.alignment import (
    ConditionalDomainAdversarialLoss,
    CorrelationAlignmentLoss,
    DomainAdversarialLoss,
    DomainDiscriminator,
    GaussianKernel,
    GradientReverse,
    MinimumClassConfusionLoss,
    MultipleKernelMMD,
    RandomizedMultilinearMap,
    WarmStartGradientReverse,
    entropy_weights,
    multilinear_map,
)
from tlroutes.objectives.validators import (
    VALIDATORS,
    entropy,
    information_maximization,
    negative_entropy,
    soft_neighborhood_density,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest (and steadiest on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _lam(p: float, gamma: float = 10.0, lo: float = 0.0, hi: float = 1.0) -> float:
    """The DANN schedule, written out independently."""
    return lo + (hi - lo) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


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


def test_dann_loss_and_accuracy_on_a_fixed_discriminator():
    class Const(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 1) + 0.0 * x.sum(1, keepdim=True)

    loss = DomainAdversarialLoss(Const())
    value = loss(torch.randn(3, 2), torch.randn(5, 2))
    assert value.item() == pytest.approx(math.log(2.0))
    # logit 0 -> predicted "target": right on target, wrong on source.
    assert loss.last_accuracy == pytest.approx(0.5)

    # A discriminator that reads the first feature: per-domain means, then averaged.
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0]]))
        lin.bias.zero_()
    f_s = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    f_t = torch.tensor([[-3.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    sp = lambda z: math.log1p(math.exp(z))  # noqa: E731  BCE(z, 1) = sp(-z); BCE(z, 0) = sp(z)
    expected = 0.5 * ((sp(-2) + sp(1)) / 2 + (sp(-3) + sp(1) + sp(0.5)) / 3)
    dl = DomainAdversarialLoss(discriminator=lin)
    assert dl(f_s, f_t).item() == pytest.approx(expected, rel=1e-6)
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


def test_coral_is_zero_for_identical_batches_and_matches_numpy():
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

    # by hand: d = 1, source {0, 2} var 2, target {0, 1, 2} var 1 -> (2 - 1)^2 / 4 = 0.25
    s = torch.tensor([[0.0], [2.0]])
    t = torch.tensor([[0.0], [1.0], [2.0]])
    assert coral(s, t).item() == pytest.approx(0.25)
    with pytest.raises(DataError, match="at least 2"):
        coral(torch.randn(1, 3), torch.randn(4, 3))


# --------------------------------------------------------------------------- MMD


def _numpy_mmd_unbiased(xs, xt, sigmas2):
    k = lambda a, b: sum(np.exp(-((a - b) ** 2).sum() / (2 * s2)) for s2 in sigmas2)  # noqa: E731
    n, m = len(xs), len(xt)
    ss = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    tt = sum(k(xt[i], xt[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    st = sum(k(xs[i], xt[j]) for i in range(n) for j in range(m)) / (n * m)
    return ss + tt - 2 * st


def test_mmd_matches_numpy_on_tiny_cases():
    rng = np.random.RandomState(1)
    xs, xt = rng.randn(4, 3), rng.randn(5, 3) + 0.5
    ts, tt = torch.from_numpy(xs), torch.from_numpy(xt)
    # fixed bandwidths
    mmd = MultipleKernelMMD([GaussianKernel(sigma=1.0), GaussianKernel(sigma=2.0)])
    expected = _numpy_mmd_unbiased(xs, xt, [1.0, 4.0])
    assert mmd(ts, tt).item() == pytest.approx(expected, rel=1e-10)
    # default family: σ² = 2^k · mean squared distance over distinct pairs, k = -3..1
    z = np.r_[xs, xt]
    d2 = [((z[i] - z[j]) ** 2).sum() for i in range(9) for j in range(9) if i != j]
    sigmas2 = [2.0**k * np.mean(d2) for k in range(-3, 2)]
    expected = _numpy_mmd_unbiased(xs, xt, sigmas2)
    assert MultipleKernelMMD()(ts, tt).item() == pytest.approx(expected, rel=1e-10)

    # linear-time estimator: quad-tuples (x1, x2, y1, y2), (x3, x4, y3, y4)
    xs4, xt4 = rng.randn(4, 2), rng.randn(4, 2)
    k = lambda a, b: np.exp(-((a - b) ** 2).sum() / 2.0)  # noqa: E731  sigma = 1
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
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        MultipleKernelMMD(linear=True)(torch.randn(4, 2), torch.randn(6, 2))
    assert torch.isfinite(MultipleKernelMMD()(torch.randn(4, 2), torch.randn(6, 2)))


# --------------------------------------------------------------------------- MCC


def _numpy_mcc(logits, temperature):
    z = logits / temperature
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h = -(p * np.log(p)).sum(1)
    w = 1 + np.exp(-h)
    w = len(p) * w / w.sum()
    c = (p * w[:, None]).T @ p
    c = c / c.sum(1, keepdims=True)
    return (c.sum() - np.trace(c)) / p.shape[1]


def test_mcc_known_answers():
    mcc = MinimumClassConfusionLoss()
    # uniform predictions over K classes: every normalised row is 1/K -> (K - 1) / K
    assert mcc(torch.zeros(6, 4)).item() == pytest.approx(0.75)
    # confident predictions of distinct classes: no confusion
    assert mcc(100.0 * torch.eye(5)).item() == pytest.approx(0.0, abs=1e-9)
    # 3 confident samples, K = 5: the two absent classes' rows (tiny probabilities) normalise to
    # (1/3, 1/3, 1/3, 0, 0), each adding 1 off the diagonal -> 2 / 5
    assert mcc(100.0 * torch.eye(3, 5)).item() == pytest.approx(0.4, abs=1e-6)
    # exactly zero columns stay zero rather than NaN
    assert MinimumClassConfusionLoss(temperature=0.01)(100.0 * torch.eye(3, 5)).item() == 0.0
    # two samples, K = 2, T = 1 by hand: p1 = (1, 0), p2 = (1/2, 1/2)
    # w ∝ (2, 1.5) -> (8/7, 6/7); C = [[8/7 + 3/14, 3/14], [3/14, 3/14]]
    # rows normalised: [[19/22, 3/22], [1/2, 1/2]] -> loss = (3/22 + 1/2) / 2 = 7/22
    logits = torch.tensor([[100.0, 0.0], [0.0, 0.0]])
    assert MinimumClassConfusionLoss(temperature=1.0)(logits).item() == pytest.approx(7 / 22)
    rng = np.random.RandomState(3)
    logits = rng.randn(7, 4) * 3
    got = mcc(torch.from_numpy(logits)).item()
    assert got == pytest.approx(_numpy_mcc(logits, 2.5), rel=1e-10)


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
