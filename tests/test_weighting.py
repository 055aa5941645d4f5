"""Multi-task weightings: known answers, invariants, masks, the factory, and a Pareto toy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq, nnls
from torch import nn

from tlroutes.errors import ConfigError, DataError
from tlroutes.objectives.mtl_gradients import (
    MGDA,
    CAGrad,
    GradNorm,
    NashMTL,
    PCGrad,
    min_norm_weights,
    nash_weights,
    pcgrad_project,
)
from tlroutes.objectives.weighting import (
    DynamicWeightAverage,
    EqualWeighting,
    RandomLossWeighting,
    UncertaintyWeighting,
    available_weightings,
    create_weighting,
)

ALL = available_weightings()
CONFLICT_AWARE = ["pcgrad", "mgda", "cagrad", "nash_mtl"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- helpers


class TinyMTL(nn.Module):
    """A shared trunk and one linear head per task."""

    def __init__(self, num_tasks: int = 3, d_in: int = 5, d_hidden: int = 6, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(d_hidden, 1) for _ in range(num_tasks))
        self.double()

    def losses(self, x, ys, scales=None):
        feats = self.trunk(x)
        scales = scales or [1.0] * len(self.heads)
        out = [s * F.mse_loss(h(feats), y) for h, y, s in zip(self.heads, ys, scales, strict=True)]
        return out, feats


def data(num_tasks: int = 3, n: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    ys = [torch.randn(n, 1, generator=g, dtype=torch.float64) for _ in range(num_tasks)]
    return x, ys


def grads_of(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


def flat(t):
    return torch.cat([p.reshape(-1) for p in t])


# --------------------------------------------------------------------------- factory


def test_factory_builds_every_method():
    assert ALL == ["ew", "uw", "dwa", "gradnorm", "pcgrad", "mgda", "cagrad", "nash_mtl", "rlw"]
    for name in ALL:
        w = create_weighting(name, 3)
        assert w.num_tasks == 3 and w.name == name
    assert isinstance(create_weighting("Nash-MTL", 2), NashMTL)
    assert create_weighting("cagrad", 2, c=0.2).c == 0.2


def test_factory_errors():
    with pytest.raises(ConfigError, match="Did you mean 'pcgrad'"):
        create_weighting("pcgard", 2)
    with pytest.raises(ConfigError, match="Choose one of"):
        create_weighting("zzz", 2)
    with pytest.raises(ConfigError, match="takes no argument 'temprature'.*'temperature'"):
        create_weighting("dwa", 2, temprature=3.0)
    with pytest.raises(ConfigError):
        create_weighting("ew", 0)
    with pytest.raises(ConfigError):
        create_weighting("dwa", 2, temperature=-1.0)
    with pytest.raises(ConfigError):
        create_weighting("uw", 2, kinds=["regression", "segmentation"])
    with pytest.raises(ConfigError):
        create_weighting("mgda", 2, normalization="l3")


def test_bad_losses_are_data_errors():
    w = EqualWeighting(3)
    p = nn.Parameter(torch.ones(2))
    with pytest.raises(DataError, match="3 tasks"):
        w.backward([p.sum(), p.sum()], [p])
    with pytest.raises(DataError, match="scalar"):
        w.backward([p, p.sum(), p.sum()], [p])
    with pytest.raises(DataError, match="mask"):
        w.backward([p.sum()] * 3, [p], mask=[True, False])


# --------------------------------------------------------------------------- PCGrad


def _pcgrad_reference(G: torch.Tensor, orders):
    """The paper's procedure on vectors, asserting after each projection that g_i^PC ⟂ g_j."""
    out = []
    for i in range(G.shape[0]):
        g = G[i].clone()
        for j in orders[i]:
            dot = g @ G[j]
            if dot < 0:
                g = g - dot / (G[j] @ G[j]) * G[j]
                assert abs(float(g @ G[j])) < 1e-9 * float(G[j] @ G[j]) + 1e-12
        out.append(g)
    return torch.stack(out)


def test_pcgrad_two_tasks_removes_the_conflict():
    gen = torch.Generator().manual_seed(0)
    n_conflicting = 0
    for _ in range(50):
        G = torch.randn(2, 7, generator=gen, dtype=torch.float64)
        P = pcgrad_project(G)
        d = P.sum(0)
        if G[0] @ G[1] < 0:
            n_conflicting += 1
            # each projected gradient is orthogonal to the other original, so it no longer
            # conflicts with it, and the update conflicts with neither task
            assert abs(float(P[0] @ G[1])) < 1e-10 and abs(float(P[1] @ G[0])) < 1e-10
            assert d @ G[0] >= -1e-10 and d @ G[1] >= -1e-10
        else:
            torch.testing.assert_close(P, G)
    assert n_conflicting > 10


def test_pcgrad_many_tasks_invariant():
    """For K > 2 a later projection can re-create a conflict with an earlier g_j, so the exact
    invariant is: g_i^PC = g_i + Σ_j c_ij g_j with c_ij >= 0 (a conflicting component is removed
    by adding back a non-negative multiple of that g_j); g_i^PC does not conflict with the
    gradient visited last (it is orthogonal to it if projected); it is never longer than g_i;
    and it equals the step-by-step vector procedure of the paper."""
    gen = torch.Generator().manual_seed(3)
    K = 5
    for _ in range(20):
        G = torch.randn(K, 9, generator=gen, dtype=torch.float64)
        orders = [[j for j in torch.randperm(K, generator=gen).tolist() if j != i]
                  for i in range(K)]
        P = pcgrad_project(G, orders)
        torch.testing.assert_close(P, _pcgrad_reference(G, orders))
        for i in range(K):
            others = [j for j in range(K) if j != i]
            coef, resid = nnls(G[others].T.numpy(), (P[i] - G[i]).numpy())
            assert resid < 1e-8 and (coef >= 0).all()
            assert P[i].norm() <= G[i].norm() + 1e-12
            if all(G[i] @ G[j] >= 0 for j in others):
                torch.testing.assert_close(P[i], G[i])
            # after the last visit g_i^PC does not conflict with that g_j (0 if projected)
            assert float(P[i] @ G[orders[i][-1]]) >= -1e-10


def test_pcgrad_weighting_writes_projected_sum_and_plain_head_grads():
    model = TinyMTL(2)
    x, ys = data(2)
    losses, _ = model.losses(x, ys)
    shared = list(model.trunk.parameters())
    G = torch.stack([flat(torch.autograd.grad(loss, shared, retain_graph=True)) for loss in losses])
    head_grads = [torch.autograd.grad(loss, list(h.parameters()), retain_graph=True)
                  for loss, h in zip(losses, model.heads, strict=True)]
    logs = PCGrad(2).backward(losses, shared)
    torch.testing.assert_close(flat([p.grad for p in shared]), pcgrad_project(G).sum(0))
    for h, expected in zip(model.heads, head_grads, strict=True):
        for p, g in zip(h.parameters(), expected, strict=True):
            torch.testing.assert_close(p.grad, g)
    assert logs["conflicts"] == int(G[0] @ G[1] < 0)


# --------------------------------------------------------------------------- UW


@pytest.mark.parametrize(
    ("kinds", "factor"), [(None, 1.0), (["regression", "regression"], 1.0),
                          (["classification", "classification"], 0.5)]
)
def test_uncertainty_weights_reach_closed_form_on_fixed_losses(kinds, factor):
    """exp(−s)·L + s is minimal at s = log L: the weight exp(−s) → 1/L (1/(2L) for the
    paper's classification factors exp(−s)·L + s/2)."""
    fixed = torch.tensor([0.25, 4.0])  # irreducible MSEs σ1², σ2², held fixed
    w = UncertaintyWeighting(2, kinds=kinds)
    opt = torch.optim.SGD(w.parameters(), lr=0.3)
    for _ in range(300):
        opt.zero_grad()
        logs = w.backward(list(fixed), [])
        opt.step()
    torch.testing.assert_close(torch.exp(-w.log_vars.detach()), factor / fixed, rtol=1e-3, atol=0)
    assert logs["weights"].shape == (2,)


def test_uncertainty_weighting_learns_inverse_noise_on_regression():
    """Two regression heads on a shared linear map with noise σ1 = 0.5 and σ2 = 2: trained
    jointly, each weight ends at 1 / (its MSE) ≈ 1 / σ_k²."""
    gen = torch.Generator().manual_seed(0)
    n, d = 2000, 4
    x = torch.randn(n, d, generator=gen)
    w_true = torch.randn(d, 2, generator=gen)
    sigma = torch.tensor([0.5, 2.0])
    y = x @ w_true + sigma * torch.randn(n, 2, generator=gen)
    torch.manual_seed(0)
    trunk, heads = nn.Linear(d, 8), nn.ModuleList(nn.Linear(8, 1) for _ in range(2))
    weighting = UncertaintyWeighting(2)
    opt = torch.optim.Adam([*trunk.parameters(), *heads.parameters(), *weighting.parameters()],
                           lr=0.03)
    for _ in range(400):
        feats = trunk(x)
        losses = [F.mse_loss(h(feats).squeeze(1), y[:, k]) for k, h in enumerate(heads)]
        opt.zero_grad()
        weighting.backward(losses, trunk.parameters())
        opt.step()
    mse = torch.stack([loss.detach() for loss in losses])
    weights = torch.exp(-weighting.log_vars.detach())
    torch.testing.assert_close(weights, 1 / mse, rtol=0.1, atol=0)
    torch.testing.assert_close(mse, sigma**2, rtol=0.15, atol=0)


# --------------------------------------------------------------------------- MGDA


def test_min_norm_weights_known_answers():
    # g1 = (1, 0), g2 = (0, 2): ||γ g1 + (1−γ) g2||² = γ² + 4(1−γ)² is minimal at γ = 0.8
    G = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(min_norm_weights(G @ G.T), [0.8, 0.2], atol=1e-9)
    # (1,0), (0,1), (1,1): the min-norm point (½,½) lies on the first edge
    G = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(min_norm_weights(G @ G.T), [0.5, 0.5, 0.0], atol=1e-6)
    # a vertex: g2 = 2 g1 → all weight on g1
    G = np.array([[1.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(min_norm_weights(G @ G.T), [1.0, 0.0], atol=1e-9)
    # a random K = 4 problem: the KKT conditions of min αᵀMα on the simplex
    rng = np.random.default_rng(0)
    G = rng.normal(size=(4, 3))
    M = G @ G.T
    a = min_norm_weights(M, max_iter=5000, tol=1e-12)
    grad = M @ a
    assert abs(a.sum() - 1) < 1e-12 and (a >= 0).all()
    assert (grad >= grad[a > 1e-6].min() - 1e-4).all()
    assert np.ptp(grad[a > 1e-6]) < 1e-4


def test_mgda_on_shared_parameters():
    x = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    g1, g2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 2.0],
                                                                          dtype=torch.float64)
    logs = MGDA(2).backward([g1 @ x, g2 @ x], [x])
    torch.testing.assert_close(logs["weights"], torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(x.grad, 0.8 * g1 + 0.2 * g2)
    assert "upper_bound" not in logs


def test_mgda_upper_bound_uses_shared_features():
    """MGDA-UB: the weights come from gradients w.r.t. Z, not w.r.t. the shared weights."""
    theta = nn.Parameter(torch.ones(2, dtype=torch.float64))
    scale = torch.tensor([1.0, 3.0], dtype=torch.float64)
    c1, c2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 2.0],
                                                                          dtype=torch.float64)

    def run(**kw):
        theta.grad = None
        z = theta * scale
        return MGDA(2, **kw).backward([c1 @ z, c2 @ z], [theta], shared_features=z)

    ub = run()  # ∂L1/∂Z = (1, 0), ∂L2/∂Z = (0, 2) → α = (0.8, 0.2)
    assert ub["upper_bound"] is True
    torch.testing.assert_close(ub["weights"], torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(theta.grad, (0.8 * c1 + 0.2 * c2) * scale)
    exact = run(upper_bound=False)  # ∂L/∂θ = (1, 0) and (0, 6): α = (36/37, 1/37)
    assert "upper_bound" not in exact
    torch.testing.assert_close(exact["weights"], torch.tensor([36 / 37, 1 / 37]))
    with pytest.raises(DataError, match="shared_features"):
        MGDA(2, upper_bound=True).backward([c1 @ (theta * scale), c2 @ (theta * scale)], [theta])


@pytest.mark.parametrize("name", ["pcgrad", "cagrad", "nash_mtl"])
def test_feature_gradient_variant(name):
    """on="features": the method runs on ∂L_k/∂Z and the combined ∂/∂Z is back-propagated once
    through everything upstream of Z (a stem that is not listed as shared included)."""
    model = TinyMTL(3)
    stem = nn.Linear(5, 5).double()
    x, ys = data(3)

    def losses_and_z():
        feats = model.trunk(stem(x))
        return [F.mse_loss(h(feats), y) for h, y in zip(model.heads, ys, strict=True)], feats

    losses, z = losses_and_z()
    Gz = torch.stack([torch.autograd.grad(loss, z, retain_graph=True)[0].reshape(-1)
                      for loss in losses])
    logs = create_weighting(name, 3, on="features").backward(
        losses, model.trunk.parameters(), shared_features=z)
    assert logs["on"] == "features"
    beta = logs["weights"].double()
    upstream = [*model.trunk.parameters(), *stem.parameters()]
    losses, z = losses_and_z()
    expected = torch.autograd.grad(z, upstream, grad_outputs=(beta @ Gz).view_as(z))
    for p, g in zip(upstream, expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    with pytest.raises(DataError, match="shared_features"):
        create_weighting(name, 3, on="features").backward(losses, model.trunk.parameters())


# --------------------------------------------------------------------------- Nash-MTL, CAGrad


def test_nash_weights_solve_the_bargaining_equation():
    rng = np.random.default_rng(1)
    G = rng.normal(size=(3, 6)) * np.array([[1.0], [10.0], [0.1]])
    M = G @ G.T
    alpha, iters = nash_weights(M)
    np.testing.assert_allclose(M @ alpha, 1 / alpha, rtol=1e-6)
    assert iters < 50 and abs(alpha @ M @ alpha - 3) < 1e-5  # ‖d‖² = K


def test_nash_mtl_is_invariant_to_loss_scales():
    model = TinyMTL(3)
    x, ys = data(3)
    out = []
    for scales in ([1.0, 1.0, 1.0], [100.0, 1.0, 0.01]):
        model.zero_grad()
        losses, _ = model.losses(x, ys, scales)
        NashMTL(3).backward(losses, model.trunk.parameters())
        out.append(flat([p.grad for p in model.trunk.parameters()]))
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-8)


def test_cagrad_with_c0_is_equal_weighting_and_improves_the_worst_task():
    model = TinyMTL(3)
    x, ys = data(3)
    shared = list(model.trunk.parameters())

    def shared_grad(weighting):
        model.zero_grad()
        losses, _ = model.losses(x, ys, [1.0, 5.0, 0.2])
        weighting.backward(losses, shared)
        return flat([p.grad for p in shared])

    torch.testing.assert_close(shared_grad(CAGrad(3, c=0.0)), shared_grad(EqualWeighting(3)))
    losses, _ = model.losses(x, ys, [1.0, 5.0, 0.2])
    G = torch.stack([flat(torch.autograd.grad(loss, shared, retain_graph=True)) for loss in losses])
    # CAGrad's direction maximises min_k g_k·d over a ball around g0 that contains g0 itself
    d_cagrad, d_ew = shared_grad(CAGrad(3, c=0.5)) * (1 + 0.5**2), G.sum(0)
    assert float((G @ d_cagrad).min()) > float((G @ d_ew).min())


# --------------------------------------------------------------------------- DWA, RLW, GradNorm


def test_dwa_weights_follow_loss_ratios():
    w = DynamicWeightAverage(2, temperature=2.0, per="step")
    p = nn.Parameter(torch.ones(()))
    assert torch.equal(w.backward([p * 1.0, p * 1.0], [p])["weights"], torch.ones(2))
    w.backward([p * 1.0, p * 1.0], [p])
    logs = w.backward([p * 0.5, p * 1.0], [p])  # still ratios of the two earlier steps: 1, 1
    torch.testing.assert_close(logs["weights"], torch.ones(2))
    logs = w.backward([p, p], [p])  # ratios 0.5 and 1
    expected = 2 * torch.softmax(torch.tensor([0.5, 1.0]) / 2.0, 0)
    torch.testing.assert_close(logs["weights"], expected)

    e = DynamicWeightAverage(2)  # per epoch: weights change only after end_epoch()
    for mean in ([2.0, 1.0], [1.0, 1.0]):
        for _ in range(3):
            assert torch.equal(e.backward([p * mean[0], p * mean[1]], [p])["weights"],
                               torch.ones(2))
        e.end_epoch()
    logs = e.backward([p, p], [p])
    torch.testing.assert_close(logs["weights"], 2 * torch.softmax(torch.tensor([0.25, 0.5]), 0))


def test_random_weights_are_reproducible_and_resume():
    p = nn.Parameter(torch.ones(()))
    a, b = RandomLossWeighting(3, seed=7), RandomLossWeighting(3, seed=7)
    seq_a = [a.backward([p, p, p], [p])["weights"] for _ in range(5)]
    seq_b = [b.backward([p, p, p], [p])["weights"] for _ in range(3)]
    resumed = RandomLossWeighting(3, seed=7)
    resumed.load_state_dict(b.state_dict())
    seq_b += [resumed.backward([p, p, p], [p])["weights"] for _ in range(2)]
    for wa, wb in zip(seq_a, seq_b, strict=True):
        torch.testing.assert_close(wa, wb)
        assert abs(float(wa.sum()) - 1) < 1e-6
    assert not torch.equal(seq_a[0], seq_a[1])
    other = RandomLossWeighting(3, seed=8).backward([p, p, p], [p])["weights"]
    assert not torch.equal(other, seq_a[0])


def test_gradnorm_weight_gradient_and_renormalisation():
    model = TinyMTL(2)
    x, ys = data(2)
    gn = GradNorm(2, alpha=1.5)
    with torch.no_grad():
        gn.weights.copy_(torch.tensor([3.0, 1.0]))  # renormalised to sum K = 2 at backward()
    losses, _ = model.losses(x, ys)
    last = model.trunk[0].weight  # the last shared weight matrix ("last shared layer")
    norms = torch.stack([torch.autograd.grad(loss, [last], retain_graph=True)[0].norm()
                         for loss in losses]).float()
    logs = gn.backward(losses, model.trunk.parameters())
    w = torch.tensor([1.5, 0.5])
    torch.testing.assert_close(gn.weights.detach(), w)
    torch.testing.assert_close(logs["weights"], w)
    # first step: L(t)/L(0) = 1, so the target is mean_k(w_k n_k) for every task
    G = w * norms
    torch.testing.assert_close(gn.weights.grad, torch.sign(G - G.mean()) * norms)
    with pytest.raises(DataError, match="shared_features"):
        GradNorm(2, on="features").backward(model.losses(x, ys)[0], model.trunk.parameters())


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", ALL)
def test_gradients_accumulate_and_task_params_can_be_given(name):
    model = TinyMTL(3)
    x, ys = data(3)
    params = list(model.parameters())

    def once(weighting, **kw):
        losses, feats = model.losses(x, ys)
        return weighting.backward(losses, model.trunk.parameters(), **kw)

    model.zero_grad()
    once(create_weighting(name, 3))
    single = grads_of(params)
    model.zero_grad()
    once(create_weighting(name, 3), task_params=model.heads.parameters())
    for g, s in zip(grads_of(params), single, strict=True):
        torch.testing.assert_close(g, s)
    model.zero_grad()
    w = create_weighting(name, 3)
    once(w)
    if name in ("rlw", "pcgrad"):  # random draws differ between steps; restart the sequence
        w.num_steps.zero_()
    once(w)
    for g, s in zip(grads_of(params), single, strict=True):
        torch.testing.assert_close(g, 2 * s)


@pytest.mark.parametrize("name", ALL)
def test_masked_task_contributes_nothing(name):
    """Mask, None and a NaN loss (a task with no labelled sample in the batch) all skip the task:
    the gradients do not depend on its loss, its head gets no gradient, and nothing is NaN."""
    model = TinyMTL(3)
    x, ys = data(3)
    params = list(model.parameters())
    head1 = list(model.heads[1].parameters())

    def run(variant, scale=1.0):
        model.zero_grad()
        w = create_weighting(name, 3)
        feats = model.trunk(x)
        losses = [F.mse_loss(h(feats), y) for h, y in zip(model.heads, ys, strict=True)]
        kw = {}
        if variant == "mask":
            losses[1] = losses[1] * scale
            kw["mask"] = torch.tensor([True, False, True])
        elif variant == "none":
            losses[1] = None
        elif variant == "nan":  # no labelled sample: a mean over an empty selection
            empty = torch.zeros(16, dtype=torch.bool)
            losses[1] = F.mse_loss(model.heads[1](feats)[empty], ys[1][empty])
            assert torch.isnan(losses[1])
        elif variant == "stacked":
            losses = torch.stack(losses) * torch.tensor([1.0, scale, 1.0], dtype=torch.float64)
            kw["mask"] = [True, False, True]
        logs = w.backward(losses, model.trunk.parameters(), shared_features=feats, **kw)
        assert logs["weights"][1] == 0 and not bool(logs["active"][1])
        return grads_of(params)

    reference = run("mask")
    for variant, scale in [("mask", 1000.0), ("none", 1.0), ("nan", 1.0), ("stacked", 77.0)]:
        got = run(variant, scale)
        for p, g, r in zip(params, got, reference, strict=True):
            if r is None:  # a stacked (K,) tensor sends zeros into the skipped task's graph
                assert g is None or not g.any()
            else:
                assert torch.isfinite(g).all()
                torch.testing.assert_close(g, r)
            if any(p is h for h in head1):
                assert g is None or not g.any()


@pytest.mark.parametrize("name", ["ew", "pcgrad", "mgda", "cagrad", "nash_mtl"])
def test_masked_equals_fewer_tasks_for_stateless_methods(name):
    model = TinyMTL(3)
    x, ys = data(3)
    model.zero_grad()
    losses, _ = model.losses(x, ys, [1.0, 1.0, 3.0])
    create_weighting(name, 3).backward(losses, model.trunk.parameters(), mask=[True, False, True])
    masked = flat([p.grad for p in model.trunk.parameters()])
    model.zero_grad()
    losses, _ = model.losses(x, ys, [1.0, 1.0, 3.0])
    create_weighting(name, 2).backward([losses[0], losses[2]], model.trunk.parameters())
    torch.testing.assert_close(masked, flat([p.grad for p in model.trunk.parameters()]))


def test_all_tasks_masked_does_nothing_and_frozen_trunk_falls_back():
    model = TinyMTL(2)
    x, ys = data(2)
    losses, _ = model.losses(x, ys)
    logs = PCGrad(2).backward(losses, model.trunk.parameters(), mask=[False, False])
    assert all(p.grad is None for p in model.parameters()) and not logs["active"].any()
    model.trunk.requires_grad_(False)
    logs = NashMTL(2).backward(losses, model.trunk.parameters())
    assert logs["fallback"] and all(p.grad is not None for p in model.heads.parameters())


# --------------------------------------------------------------------------- a Pareto toy
#
# x = (u, v) ∈ R². Task 1 is 100× larger in scale and has two wells along u: the global one,
# A ≈ (1.49, 0), and a shallower trap T ≈ (−4, 0), separated by a ridge at u ≈ −0.95. Task 2 is
# a bowl centred at b = (1, 3), inside A's well:
#
#     L1 = 100 · (p(u) + 1.1 + v²),   p(u) = −exp(−(u − 1.5)²/2) − 0.5 exp(−(u + 4)²/8)
#     L2 = (u − 1)² + (v − 3)²
#
# Every point of the trap's side is dominated (A is better for both tasks than T), so the Pareto
# set is the curve from A to b of the stationary points of L1 + μ L2 on A's side, μ ∈ [0, ∞)
# (checked below against a brute-force non-dominated filter on a grid). Equal weighting follows
# the 100× task: from starts in the trap's basin it slides into T, 4.5 away from the set.
# Conflict-aware methods keep task 2 from being sacrificed (PCGrad, MGDA and Nash-MTL move along
# directions that decrease both losses; CAGrad spends its c·‖g0‖ freedom on the worse-off task 2
# while v collapses), which carries them over the ridge. "Reach" means ending within 0.05 of the
# Pareto set. The optimiser is plain SGD on the method's gradient clipped to norm 1 with a cosine
# learning rate (0.1 → 0): the outcome for equal weighting does not depend on the step length
# (it is a basin of the summed loss), and the result holds from 0.05 to 0.2 and with unclipped
# small-step SGD too.

S_TOY, B_TOY = 100.0, (1.0, 3.0)


def _p(u):
    return -torch.exp(-((u - 1.5) ** 2) / 2) - 0.5 * torch.exp(-((u + 4) ** 2) / 8)


def toy_losses(x):
    u, v = x[0], x[1]
    return [S_TOY * (_p(u) + 1.1 + v**2), (u - B_TOY[0]) ** 2 + (v - B_TOY[1]) ** 2]


def _dp(u: float) -> float:
    return (u - 1.5) * math.exp(-((u - 1.5) ** 2) / 2) + 0.5 * (u + 4) / 4 * math.exp(
        -((u + 4) ** 2) / 8)


def toy_pareto_curve() -> np.ndarray:
    """Points of the Pareto set: ∇(L1 + μ L2) = 0 on A's side, for μ from 0 to ∞."""
    pts = []
    for mu in np.concatenate([[0.0], np.geomspace(1e-3, 1e7, 600)]):
        u = brentq(lambda u, mu=mu: S_TOY * _dp(u) + 2 * mu * (u - B_TOY[0]), B_TOY[0], 1.6)
        pts.append((u, mu * B_TOY[1] / (S_TOY + mu)))
    pts.append(B_TOY)
    return np.array(pts)


def distance_to_curve(x: np.ndarray, curve: np.ndarray) -> float:
    a, b = curve[:-1], curve[1:]
    ab = b - a
    t = np.clip(((x - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-300), 0, 1)
    return float(np.min(np.linalg.norm(a + t[:, None] * ab - x, axis=1)))


@pytest.fixture(scope="module")
def pareto_curve():
    curve = toy_pareto_curve()
    # brute force: the non-dominated points of a grid all lie on that curve (up to what a grid of
    # step 0.02 can resolve where the curve is flat); there is no other piece, on the trap's side
    U, V = np.meshgrid(np.arange(-7, 4, 0.02), np.arange(-1, 5, 0.02), indexing="ij")
    X = torch.tensor(np.stack([U.ravel(), V.ravel()]), dtype=torch.float64)
    L1, L2 = (t.numpy() for t in toy_losses(X))
    order = np.lexsort((L2, L1))
    running = np.minimum.accumulate(L2[order])
    keep = order[np.r_[True, L2[order][1:] < running[:-1]]]
    assert max(distance_to_curve(X[:, i].numpy(), curve) for i in keep) < 0.15
    return curve


def run_toy(name: str, start, steps: int = 120, lr: float = 0.1) -> np.ndarray:
    x = nn.Parameter(torch.tensor(start, dtype=torch.float64))
    weighting = create_weighting(name, 2)
    opt = torch.optim.SGD([x], lr=lr)
    extra = torch.optim.Adam(weighting.parameters(), lr=0.01) if any(
        True for _ in weighting.parameters()) else None
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / steps)) + 1e-4
        opt.zero_grad()
        if extra is not None:
            extra.zero_grad()
        weighting.backward(toy_losses(x), [x])
        torch.nn.utils.clip_grad_norm_([x], 1.0)
        opt.step()
        if extra is not None:
            extra.step()
    return x.detach().numpy()


@pytest.mark.parametrize("name", ALL)
def test_every_weighting_ends_on_the_pareto_set(name, pareto_curve):
    end = run_toy(name, (2.5, 0.5))
    assert distance_to_curve(end, pareto_curve) < 0.05, (name, end)


@pytest.mark.parametrize("start", [(-1.5, 2.0), (-1.5, 3.0)])
def test_conflict_aware_methods_reach_the_pareto_set_where_equal_weighting_does_not(
    start, pareto_curve
):
    ew = run_toy("ew", start)
    assert distance_to_curve(ew, pareto_curve) > 1.0 and ew[0] < -3  # stuck in the trap
    for name in CONFLICT_AWARE:
        end = run_toy(name, start)
        assert distance_to_curve(end, pareto_curve) < 0.05, (name, start, end)
