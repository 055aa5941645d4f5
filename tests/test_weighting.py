"""Multi-task weightings: one known-answer table for the family, TorchJD's values, the contract
(masks, accumulation, dtypes), each method's own invariants, and a Pareto toy.

A new weighting joins :func:`test_known_answers` with ONE row of :data:`KNOWN_ANSWERS`.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from dataclasses import dataclass, field
from fractions import Fraction as Fr

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq, nnls
from torch import nn

from tlroutes.errors import ConfigError, DataError
from tlroutes.objectives.mtl import (
    MGDA,
    CAGrad,
    DynamicWeightAverage,
    EqualWeighting,
    GradNorm,
    NashMTL,
    PCGrad,
    RandomLossWeighting,
    UncertaintyWeighting,
    available_weightings,
    create_weighting,
    min_norm_weights,
    nash_weights,
    pcgrad_project,
    register_weighting,
    weighting_info,
)

HAS_TORCHJD = importlib.util.find_spec("torchjd") is not None
EPS64 = float(np.finfo(np.float64).eps)


def _name(name: str):
    """``name`` as a test parameter, skipped when it needs the torchjd extra and that is absent."""
    needs_torchjd = weighting_info(name).extra == "torchjd"
    return pytest.param(name, marks=pytest.mark.skipif(
        needs_torchjd and not HAS_TORCHJD, reason="needs the torchjd extra"))


# auto_lambda reads a validation loss the caller attaches (tests/test_weighting_auxiliary.py runs
# it through the contract with one); every other method runs from the losses alone.
ALL = [_name(n) for n in available_weightings() if n != "auto_lambda"]
STATELESS = [_name(n) for n in available_weightings()
             if weighting_info(n).gradient_based and n not in ("gradnorm", "auto_lambda")]
# (no state between steps: GradNorm's and Auto-Lambda's weights carry over)
CONFLICT_AWARE = ["pcgrad", "mgda", "cagrad", "nash_mtl"]


pytestmark = pytest.mark.usefixtures("one_thread")


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


def linear_losses(J: torch.Tensor, offsets=None):
    """``L_k = J_k · x + c_k`` at ``x = 0``: the task gradients are exactly the rows of ``J``."""
    x = nn.Parameter(torch.zeros(J.shape[1], dtype=torch.float64))
    offsets = [0.0] * len(J) if offsets is None else offsets
    return x, [J[k] @ x + c for k, c in enumerate(offsets)]


# --------------------------------------------------------------------------- the known answers
#
# Each row: a method, its arguments, a fixed Jacobian J (row k = task k's gradient, reached through
# linear losses so that autograd gives J exactly) and the right answer worked out by hand: the
# shared update d (what lands in .grad) and, where the method defines them, the logged weights β
# (d = βᵀ J). Fractions keep the hand arithmetic exact. ``tol`` is an absolute tolerance on d and
# β; the default is a few ulps of float64 (the answers are exact rationals and the steps are a
# handful of float64 operations); a row that needs more says why.


@dataclass
class Row:
    method: str
    J: list[list[float]]
    d: list
    weights: list | None = None
    args: dict = field(default_factory=dict)
    offsets: list[float] | None = None  # loss values, for methods that read them
    validation: list[float] | None = None  # v of a linear validation loss v·x (auto_lambda)
    tol: float = 64 * EPS64
    why: str = ""

    @property
    def id(self) -> str:
        return f"{self.method}-{self.why}" if self.why else self.method


KNOWN_ANSWERS = [
    # equal: the plain sum
    Row("ew", [[1, 0], [0, 2]], d=[1, 2], weights=[1, 1]),
    # UW with s = ln 2 and the paper's factors a = (½, 1): w = a · e^{-s} = (¼, ½)
    Row("uw", [[1, 0], [0, 2]], d=[Fr(1, 4), 1], weights=[Fr(1, 4), Fr(1, 2)],
        args={"kinds": ["regression", "classification"], "init_log_var": math.log(2)}),
    # DWA before any history: ratios 1, w = K · softmax(1/T) = 1 each
    Row("dwa", [[1, 0], [0, 2]], d=[1, 2], weights=[1, 1]),
    # RLW with one task: softmax of one draw is 1 (the weights sum to 1)
    Row("rlw", [[3, -1]], d=[3, -1], weights=[1], args={"seed": 5}),
    # GradNorm at its first step: the weights start at 1 (renormalised to sum K)
    Row("gradnorm", [[1, 0], [0, 2]], d=[1, 2], weights=[1, 1]),
    # PCGrad, g1 = (1, 0), g2 = (−1, 1), g1·g2 = −1: g1' = g1 + ½ g2 = (½, ½),
    # g2' = g2 + g1 = (0, 1); d = (½, 3/2) = 2 g1 + 3/2 g2
    Row("pcgrad", [[1, 0], [-1, 1]], d=[Fr(1, 2), Fr(3, 2)], weights=[2, Fr(3, 2)],
        why="conflict"),
    # g1·g2 = 1 > 0: nothing to project, d = g1 + g2
    Row("pcgrad", [[1, 0], [1, 2]], d=[2, 2], weights=[1, 1], why="no-conflict"),
    # MGDA: ‖γ(1,0) + (1−γ)(0,2)‖² = γ² + 4(1−γ)² is least at γ = 4/5
    Row("mgda", [[1, 0], [0, 2]], d=[Fr(4, 5), Fr(2, 5)], weights=[Fr(4, 5), Fr(1, 5)],
        why="orthogonal"),
    # the min-norm point (½, ½) lies on the edge of the first two gradients
    Row("mgda", [[1, 0], [0, 1], [1, 1]], d=[Fr(1, 2), Fr(1, 2)], weights=[Fr(1, 2), Fr(1, 2), 0],
        why="edge"),
    # on the edge g1–g3: ‖γ(−2, −2) + (1−γ)(0, 2)‖² = 20γ² − 16γ + 4 is least at γ = 2/5, and
    # d = (−4/5, 2/5) satisfies d·g2 = 8/5 ≥ ‖d‖² = 4/5 (the solver passes through a vertex set
    # whose affine minimiser leaves the simplex and drops a vertex on the way)
    Row("mgda", [[-2, -2], [-2, 0], [0, 2]], d=[Fr(-4, 5), Fr(2, 5)],
        weights=[Fr(2, 5), 0, Fr(3, 5)], why="drop"),
    # g2 = 2 g1: the nearest point is the vertex g1
    Row("mgda", [[1, 0], [2, 0]], d=[1, 0], weights=[1, 0], why="vertex"),
    # strongly conflicting (g1·g3 = −21.5, g2·g3 = −149): g_k = e3 + v_k with v_k ⟂ e3 and
    # ½ v1 + 3/10 v2 + 1/5 v3 = 0, so the hull lies in the plane x·e3 = 1 and contains e3 there:
    # the min-norm point is e3 with α = (½, 3/10, 1/5)
    Row("mgda", [[-3, 0, 1], [0, 10, 1], [7.5, -15, 1]], d=[0, 0, 1],
        weights=[Fr(1, 2), Fr(3, 10), Fr(1, 5)], why="strong-conflict",
        tol=1e4 * EPS64 * 400),  # |ΔM| ≲ 3u·‖g‖² with ‖g‖² ≤ 282; cond(KKT) < 1e2 (see below)
    # l2 normalisation: unit gradients are orthogonal → α = (½, ½), applied to the raw gradients
    Row("mgda", [[1, 0], [0, 2]], d=[Fr(1, 2), 1], weights=[Fr(1, 2), Fr(1, 2)],
        args={"normalization": "l2"}, why="l2"),
    # CAGrad with c = 0 is the sum (K g0)
    Row("cagrad", [[1, 0], [-1, 3]], d=[0, 3], weights=[1, 1], args={"c": 0.0}, why="c0"),
    # CAGrad, orthogonal unit gradients, c = ½: w* = (½, ½) by symmetry, λ = c‖g0‖/‖g_w‖ = ½,
    # d = K(g0 + λ g_w)/(1 + c²) = 2 · (3/2)(½, ½) / (5/4) = (6/5, 6/5)
    Row("cagrad", [[1, 0], [0, 1]], d=[Fr(6, 5), Fr(6, 5)], weights=[Fr(6, 5), Fr(6, 5)],
        args={"c": 0.5}, why="c-half", tol=1e-8),  # SLSQP's ftol = 1e-10 on a symmetric start
    # Nash-MTL: M = diag(1, 4), Mα = 1/α → α = (1, ½), d = (1, 1)
    Row("nash_mtl", [[1, 0], [0, 2]], d=[1, 1], weights=[1, Fr(1, 2)],
        tol=1e-8),  # the ridge 1e-8 on the cosine matrix moves α by ridge/2
    # TorchJD's aggregators (values against TorchJD itself are in test_torchjd_values)
    # TorchJD's projector solves its QP on G/tr(G) + 1e-4·I, which moves the exact weights below
    # by up to 6e-4 (DualProj: v1 = 1/(1 + 6·1e-4)); hence tol = 1e-3, far below the gaps to any
    # other method's answer (≥ 0.1 here).
    # UPGrad, g1 = (1, 0), g2 = (−1, 1): π(g1) = g1 + ½ g2 = (½, ½), π(g2) = g2 + g1 = (0, 1),
    # d = mean = (¼, ¾) = 1·g1 + ¾·g2
    Row("upgrad", [[1, 0], [-1, 1]], d=[Fr(1, 4), Fr(3, 4)], weights=[1, Fr(3, 4)], tol=1e-3),
    # DualProj, g1 = (1, 0), g2 = (−2, 1): the mean (−½, ½) conflicts with g1; its projection on
    # the cone {y1 ≥ 0, y2 ≥ 2 y1} is (0, ½) = 1·g1 + ½·g2
    Row("dualproj", [[1, 0], [-2, 1]], d=[0, Fr(1, 2)], weights=[1, Fr(1, 2)], tol=1e-3),
    # IMTL-G: α ∝ M⁻¹(‖g1‖, ‖g2‖) = (1, ½) → α = (⅔, ⅓), d = (⅔, ⅔): equal projections
    Row("imtl_g", [[1, 0], [0, 2]], d=[Fr(2, 3), Fr(2, 3)], weights=[Fr(2, 3), Fr(1, 3)]),
    # Aligned-MTL: eigenvalues (4, 1), B = √1 · diag(1, ½), α = B (½, ½) = (½, ¼)
    Row("aligned_mtl", [[1, 0], [0, 2]], d=[Fr(1, 2), Fr(1, 2)], weights=[Fr(1, 2), Fr(1, 4)]),
    # FairGrad with a = 1 solves Mα = 1/α, Nash-MTL's equation: α = (1, ½)
    Row("fairgrad", [[1, 0], [0, 2]], d=[1, 1], weights=[1, Fr(1, 2)], args={"alpha": 1.0},
        tol=1e-7),  # scipy's least_squares stops at xtol = 1e-8 (relative)
    # fixed weights (½, 3): d = ½ (1, 0) + 3 (0, 2)
    Row("fixed", [[1, 0], [0, 2]], d=[Fr(1, 2), 6], weights=[Fr(1, 2), 3],
        args={"weights": [0.5, 3.0]}),
    # gradient similarity, main g0 = (1, 0): cos(g0, g1 = (−1, 1)) < 0 drops g1, cos(g0, g2 =
    # (1, 1)) > 0 keeps g2: d = g0 + g2 = (2, 1)
    Row("gradsim", [[1, 0], [-1, 1], [1, 1]], d=[2, 1], weights=[1, 0, 1], why="gate"),
    # weighted: g2 counts with its cosine 1/√2
    Row("gradsim", [[1, 0], [-1, 1], [1, 1]], d=[1 + 2**-0.5, 2**-0.5],
        weights=[1, 0, 2**-0.5], args={"mode": "weighted"}, why="weighted"),
    # the main task need not be task 0: main = 1, g1 = (0, 1); g0 = (1, −1) conflicts with it
    Row("gradsim", [[1, -1], [0, 1]], d=[0, 1], weights=[0, 1], args={"main": 1}, why="main1"),
    # Auto-Lambda, linear validation loss v·θ with v = (1, −1): ∂L_val/∂λ_k = −α v·g_k is
    # −1 for g0 = (1, 0) and +2 for g1 = (0, 2); Adam's first step moves each λ by meta_lr
    # against the sign: λ = (½ + ¼, ½ − ¼), and d = ¾ g0 + ¼ g1 = (¾, ½)
    Row("auto_lambda", [[1, 0], [0, 2]], d=[Fr(3, 4), Fr(1, 2)], weights=[Fr(3, 4), Fr(1, 4)],
        args={"lr": 1.0, "meta_lr": 0.25, "init": 0.5}, validation=[1.0, -1.0],
        tol=1e-8),  # Adam's ε = 1e-8 against |gradient| ≥ 1
]


def _known_answer_params():
    for row in KNOWN_ANSWERS:
        needs = weighting_info(row.method).extra == "torchjd"
        yield pytest.param(row, id=row.id, marks=pytest.mark.skipif(
            needs and not HAS_TORCHJD, reason="needs the torchjd extra"))


def test_every_method_has_a_known_answer():
    assert {row.method for row in KNOWN_ANSWERS} == set(available_weightings())


@pytest.mark.parametrize("row", list(_known_answer_params()))
def test_known_answers(row: Row):
    J = torch.tensor(row.J, dtype=torch.float64)
    x, losses = linear_losses(J, row.offsets)
    weighting = create_weighting(row.method, num_tasks=len(J), **row.args)
    if row.validation is not None:
        v = torch.tensor(row.validation, dtype=torch.float64)
        weighting.attach(lambda params, values: v @ values[0])
    logs = weighting.backward(losses, [x])
    expected = torch.tensor([float(v) for v in row.d], dtype=torch.float64)
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=row.tol)
    if row.weights is not None:
        weights = torch.tensor([float(v) for v in row.weights], dtype=logs["weights"].dtype)
        torch.testing.assert_close(logs["weights"], weights, rtol=0, atol=row.tol)


# --------------------------------------------------------------------------- TorchJD's values


def _fixed_jacobians() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    conflict = torch.randn(4, 9, generator=g, dtype=torch.float64)
    conflict[3] = -0.9 * conflict[0] + 0.1 * conflict[3]  # a strong conflict between 0 and 3
    scaled = torch.randn(3, 6, generator=g, dtype=torch.float64) * torch.tensor(
        [[10.0], [1.0], [0.1]], dtype=torch.float64)
    return {
        "conflicting": conflict,
        "scales": scaled,
        "aligned": torch.tensor([[1.0, 2.0, 0.5], [0.8, 1.9, 0.7]], dtype=torch.float64),
    }


TORCHJD_CASES = [
    ("upgrad", "UPGrad", {}),
    ("upgrad", "UPGrad", {"pref_vector": [0.5, 0.2, 0.2, 0.1]}),
    ("dualproj", "DualProj", {}),
    ("imtl_g", "IMTLG", {}),
    ("aligned_mtl", "AlignedMTL", {}),
    ("aligned_mtl", "AlignedMTL", {"scale_mode": "rmse"}),
    ("fairgrad", "FairGrad", {"alpha": 2.0}),
]


@pytest.mark.parametrize(("name", "cls", "args"), TORCHJD_CASES)
def test_torchjd_values(name, cls, args):
    """On fixed Jacobians, the registry's weighting writes exactly the update TorchJD's aggregator
    computes from the same matrix.

    Both sides run the same float64 solver on the Gram matrix; they can differ only in how
    ``G Gᵀ`` is formed (each entry is a length-P dot product: rounding ≤ γ_P ‖g_i‖ ‖g_j‖ with
    γ_P ≈ P·u, u = 2⁻⁵³) and that perturbation reaches the weights amplified by at most the
    condition number κ of the Gram matrix (the solvers invert it, or a regularised and
    trace-normalised copy whose κ is no larger), then the update ``βᵀ G`` by ‖G‖. So
    ``|Δd| ≤ K · P · u · κ · max‖g‖``, with a factor 4 for the final combination.
    """
    aggregation = pytest.importorskip("torchjd.aggregation")
    for label, J in _fixed_jacobians().items():
        K, P = J.shape
        kw = dict(args)
        if "pref_vector" in kw and len(kw["pref_vector"]) != K:
            kw["pref_vector"] = [1.0 / K] * K
        agg_kw = {**kw}
        if "pref_vector" in agg_kw:
            agg_kw["pref_vector"] = torch.tensor(agg_kw["pref_vector"], dtype=torch.float64)
        expected = getattr(aggregation, cls)(**agg_kw)(J)
        x, losses = linear_losses(J)
        create_weighting(name, num_tasks=K, **kw).backward(losses, [x])
        kappa = float(np.linalg.cond((J @ J.T).numpy()))
        tol = 4 * K * P * EPS64 * kappa * float(J.norm(dim=1).max())
        torch.testing.assert_close(x.grad, expected, rtol=0, atol=tol, msg=lambda m, lb=label: (
            f"{name} on the {lb} Jacobian: {m}"))


@pytest.mark.parametrize("name", ["upgrad", "dualproj", "imtl_g", "aligned_mtl"])
def test_torchjd_mtl_backward_matches_on_a_model(name):
    """On a model: our ``backward`` equals TorchJD's ``mtl_backward`` + ``jac_to_grad`` for the
    trunk (the aggregated Jacobian) and the heads (each its own loss's gradient).

    The two compute the per-task gradients by different autograd routes (one ``grad`` per loss
    against one batched ``vmap``), which agree to a few ulps per operation of the two-layer
    graph; the tolerance of ``test_torchjd_values`` is used with a factor 16 for that."""
    pytest.importorskip("torchjd")
    from torchjd import aggregation
    from torchjd.autojac import jac_to_grad, mtl_backward

    aggregators = {"upgrad": aggregation.UPGrad, "dualproj": aggregation.DualProj,
                   "imtl_g": aggregation.IMTLG, "aligned_mtl": aggregation.AlignedMTL}
    model = TinyMTL(3)
    x, ys = data(3)
    shared = list(model.trunk.parameters())
    losses, feats = model.losses(x, ys)
    J = torch.stack([flat(torch.autograd.grad(loss, shared, retain_graph=True)) for loss in losses])
    mtl_backward(losses, feats)
    jac_to_grad(shared, aggregators[name]())
    theirs = grads_of(model.parameters())
    model.zero_grad()
    losses, feats = model.losses(x, ys)
    create_weighting(name, num_tasks=3).backward(losses, shared)
    K, P = J.shape
    kappa = float(np.linalg.cond((J @ J.T).numpy()))
    tol = 16 * 4 * K * P * EPS64 * kappa * float(J.norm(dim=1).max())
    for ours, their in zip(grads_of(model.parameters()), theirs, strict=True):
        torch.testing.assert_close(ours, their, rtol=0, atol=tol)


def test_torchjd_weighting_without_torchjd_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchjd(name, *args, **kwargs):
        if name == "torchjd" or name.startswith("torchjd."):
            raise ImportError("No module named 'torchjd'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchjd)
    with pytest.raises(ConfigError, match=r"pip install 'tlroutes\[torchjd\]'"):
        create_weighting("upgrad", num_tasks=2)


# --------------------------------------------------------------------------- MGDA's exact solver


def planted_min_norm(alpha: np.ndarray, spread: float, P: int, seed: int):
    """Task gradients whose min-norm point is known by construction: ``g_k = d + v_k`` with a
    unit ``d``, every ``v_k ⟂ d`` and ``Σ α_k v_k = 0``. The hull lies in the plane
    ``x·d = 1``, whose nearest point to 0 is ``d = Σ α_k g_k``: the answer is ``α``. With
    ``‖v_k‖ ≈ spread ≫ 1`` the gradients conflict strongly (cosines near −1/(K−1))."""
    rng = np.random.default_rng(seed)
    K = len(alpha)
    d = rng.normal(size=P)
    d /= np.linalg.norm(d)
    V = rng.normal(size=(K, P)) * spread
    V -= np.outer(V @ d, d)
    V -= np.outer(np.ones(K), alpha @ V)
    return d + V


@pytest.mark.parametrize("K", [2, 3, 5, 8])
def test_mgda_min_norm_is_exact_on_strongly_conflicting_gradients(K):
    """Against the planted answer. The solver ends at the solution of the KKT system of its
    active set, so its error is rounding: the Gram entries carry |ΔM| ≤ γ_P max‖g‖² (γ_P ≈ P·u)
    and the solve amplifies the relative error by cond(KKT) — the bound below. (The paper's
    Frank-Wolfe with its ‖Δα‖ < 1e-5 stop misses this by 1e-2 in α for K = 5.)"""
    alpha = np.random.default_rng(K).dirichlet(np.ones(K))
    G = planted_min_norm(alpha, spread=1000.0, P=20, seed=K)
    M = G @ G.T
    cos = M / np.sqrt(np.outer(np.diag(M), np.diag(M)))
    assert cos[np.triu_indices(K, 1)].min() < -0.5  # some pair conflicts strongly
    got = min_norm_weights(M)
    Ms = M / np.diag(M).max()
    kkt = np.block([[Ms, -np.ones((K, 1))], [np.ones((1, K)), np.zeros((1, 1))]])
    tol = np.linalg.cond(kkt) * 20 * K * EPS64
    np.testing.assert_allclose(got, alpha, rtol=0, atol=tol)
    # the optimality certificate, independent of the construction: (Mα)_k ≥ αᵀMα for all k
    Mx = Ms @ got
    assert Mx.min() >= got @ Mx - 1e-12


def test_min_norm_matches_enumeration_on_degenerate_problems():
    """Duplicate, opposite, zero and (K > P + 1) dependent gradients, gradients of very different
    scales: the objective equals the best over all supports (each support's KKT system solved by
    least squares), to the solver's stop tolerance (2 · 1e-12 of the largest ‖g‖²)."""
    from itertools import combinations

    def enumerate_supports(M):
        best = math.inf
        for r in range(1, len(M) + 1):
            for S in combinations(range(len(M)), r):
                n = len(S)
                A = np.zeros((n + 1, n + 1))
                A[:n, :n] = M[np.ix_(S, S)]
                A[:n, n], A[n, :n] = -1.0, 1.0
                a = np.linalg.lstsq(A, np.r_[np.zeros(n), 1.0], rcond=None)[0][:n]
                if (a >= -1e-12).all():
                    a = np.clip(a, 0, None) / np.clip(a, 0, None).sum()
                    best = min(best, a @ M[np.ix_(S, S)] @ a)
        return best

    rng = np.random.default_rng(0)
    for trial in range(300):
        K, P = int(rng.integers(2, 7)), int(rng.integers(1, 6))
        G = rng.normal(size=(K, P)) * rng.choice([1.0, 1e-3, 1e3], size=(K, 1))
        if trial % 3 == 0:
            G[1] = G[0] * rng.choice([1.0, 2.0, -1.0])
        if trial % 7 == 0:
            G[0] = 0.0
        M = G @ G.T
        a = min_norm_weights(M)
        assert abs(a.sum() - 1) < 1e-12 and (a >= 0).all()
        assert a @ M @ a - enumerate_supports(M) <= 2e-12 * np.diag(M).max()


# --------------------------------------------------------------------------- the registry


def test_registry_names_properties_and_build():
    assert set(available_weightings()) >= {
        "ew", "uw", "dwa", "gradnorm", "pcgrad", "mgda", "cagrad", "nash_mtl", "rlw",
        "upgrad", "dualproj", "imtl_g", "aligned_mtl", "fairgrad"}
    gradient = {n for n in available_weightings() if weighting_info(n).gradient_based}
    assert gradient == {"gradnorm", "pcgrad", "mgda", "cagrad", "nash_mtl", "upgrad",
                        "dualproj", "imtl_g", "aligned_mtl", "fairgrad", "gradsim",
                        "auto_lambda"}
    assert {n for n in available_weightings() if weighting_info(n).auxiliary} == {
        "gradsim", "auto_lambda"}
    assert {n for n in available_weightings() if weighting_info(n).extra == "torchjd"} == {
        "upgrad", "dualproj", "imtl_g", "aligned_mtl", "fairgrad"}
    for name in ("ew", "uw", "dwa", "gradnorm", "pcgrad", "mgda", "cagrad", "nash_mtl", "rlw"):
        w = create_weighting(name, num_tasks=3)
        assert w.num_tasks == 3 and w.name == name
    assert isinstance(create_weighting("Nash-MTL", num_tasks=2), NashMTL)
    assert create_weighting("cagrad", num_tasks=2, c=0.2).c == 0.2


def test_registry_errors():
    with pytest.raises(ConfigError, match="Did you mean 'pcgrad'"):
        create_weighting("pcgard", num_tasks=2)
    with pytest.raises(ConfigError, match="Registered: .*nash_mtl"):
        create_weighting("zzz", num_tasks=2)
    with pytest.raises(ConfigError, match="no argument 'temprature'.*'temperature'"):
        create_weighting("dwa", num_tasks=2, temprature=3.0)
    with pytest.raises(ConfigError, match="num_tasks"):
        from tlroutes.objectives.mtl import check_weighting_args
        check_weighting_args("ew", {"num_tasks": 2})
    with pytest.raises(TypeError):
        create_weighting("ew", 2)  # num_tasks is keyword-only
    with pytest.raises(ConfigError, match="must take num_tasks first"):
        register_weighting("bad")(type("Bad", (EqualWeighting,), {"__init__": lambda self: None}))
    assert "bad" not in available_weightings()
    for name, bad in [("ew", {}), ("dwa", {"temperature": -1.0}),
                      ("uw", {"kinds": ["regression", "segmentation"]}),
                      ("mgda", {"normalization": "l3"}), ("pcgrad", {"on": "feature"})]:
        with pytest.raises(ConfigError):
            create_weighting(name, num_tasks=0 if not bad else 2, **bad)


def test_the_recipe_names_a_registered_weighting_with_accepted_arguments():
    from pydantic import ValidationError

    from tlroutes.routes.multi_task_learning import Recipe

    assert Recipe(weighting="Nash-MTL").weighting == "nash_mtl"
    with pytest.raises(ValidationError, match="Did you mean 'pcgrad'"):
        Recipe(weighting="pcgard")
    with pytest.raises(ValidationError, match="'temperature'"):
        Recipe(weighting="dwa", weighting_args={"temprature": 3.0})


def test_bad_losses_are_data_errors():
    w = EqualWeighting(num_tasks=3)
    p = nn.Parameter(torch.ones(2))
    with pytest.raises(DataError, match="3 tasks"):
        w.backward([p.sum(), p.sum()], [p])
    with pytest.raises(DataError, match="scalar"):
        w.backward([p, p.sum(), p.sum()], [p])
    with pytest.raises(DataError, match="mask"):
        w.backward([p.sum()] * 3, [p], mask=[True, False])


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("name", ALL)
def test_every_weighting_works_under_a_float64_default_dtype(name):
    """``torch.set_default_dtype(torch.float64)`` (a float64 model built by default) gives the
    same gradients and logs as a float32 default with the model cast to float64. The only
    difference is the dtype of a weighting's own parameters (UW, GradNorm: created in the default
    dtype), whose initial values (0 and 1) are exact in both, so the results agree to float64
    rounding; a float32 model under the float64 default runs too."""

    base = TinyMTL(3)  # one initialisation for all runs (the draws depend on the dtype)

    def run(default, model_dtype):
        before = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            model = copy.deepcopy(base).to(model_dtype)
            x, ys = data(3)
            losses, feats = model.losses(x.to(model_dtype), [y.to(model_dtype) for y in ys])
            logs = create_weighting(name, num_tasks=3).backward(
                losses, model.trunk.parameters(), shared_features=feats)
            return grads_of(model.parameters()), logs
        finally:
            torch.set_default_dtype(before)

    ref_grads, ref_logs = run(torch.float32, torch.float64)
    grads, logs = run(torch.float64, torch.float64)
    assert logs["weights"].dtype == torch.float64 and ref_logs["weights"].dtype == torch.float32
    torch.testing.assert_close(logs["weights"].float(), ref_logs["weights"])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)
    mixed, _ = run(torch.float64, torch.float32)
    assert all(g is None or (g.dtype == torch.float32 and torch.isfinite(g).all()) for g in mixed)


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


@pytest.mark.parametrize("name", [p for p in STATELESS])
def test_heads_get_the_documented_loss_weights(name):
    """The heads' gradient is that of Σ h_k L_k: h_k = α_k (the logged weights) for MGDA and
    Nash-MTL, 1 for the others (each head its own loss, as in the papers' code and TorchJD)."""
    model = TinyMTL(3)
    x, ys = data(3)
    losses, _ = model.losses(x, ys, [1.0, 4.0, 0.3])
    logs = create_weighting(name, num_tasks=3).backward(losses, model.trunk.parameters())
    h = logs["weights"].double() if name in ("mgda", "nash_mtl") else torch.ones(3).double()
    losses, _ = model.losses(x, ys, [1.0, 4.0, 0.3])
    for k, head in enumerate(model.heads):
        expected = torch.autograd.grad(h[k] * losses[k], list(head.parameters()))
        for p, e in zip(head.parameters(), expected, strict=True):
            torch.testing.assert_close(p.grad, e)


# --------------------------------------------------------------------------- UW


@pytest.mark.parametrize(
    ("kinds", "factor"), [(None, 1.0), (["regression", "regression"], 1.0),
                          (["classification", "classification"], 0.5)]
)
def test_uncertainty_weights_reach_closed_form_on_fixed_losses(kinds, factor):
    """exp(−s)·L + s is minimal at s = log L: the weight exp(−s) → 1/L (1/(2L) for the
    paper's classification factors exp(−s)·L + s/2)."""
    fixed = torch.tensor([0.25, 4.0])  # irreducible MSEs σ1², σ2², held fixed
    w = UncertaintyWeighting(num_tasks=2, kinds=kinds)
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
    weighting = UncertaintyWeighting(num_tasks=2)
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


# --------------------------------------------------------------------------- MGDA-UB, features


def test_mgda_upper_bound_uses_shared_features():
    """MGDA-UB: the weights come from gradients w.r.t. Z, not w.r.t. the shared weights."""
    theta = nn.Parameter(torch.ones(2, dtype=torch.float64))
    scale = torch.tensor([1.0, 3.0], dtype=torch.float64)
    c1, c2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 2.0],
                                                                          dtype=torch.float64)

    def run(**kw):
        theta.grad = None
        z = theta * scale
        return MGDA(num_tasks=2, **kw).backward([c1 @ z, c2 @ z], [theta], shared_features=z)

    ub = run()  # ∂L1/∂Z = (1, 0), ∂L2/∂Z = (0, 2) → α = (0.8, 0.2)
    assert ub["upper_bound"] is True
    torch.testing.assert_close(ub["weights"], torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(theta.grad, (0.8 * c1 + 0.2 * c2) * scale)
    exact = run(upper_bound=False)  # ∂L/∂θ = (1, 0) and (0, 6): α = (36/37, 1/37)
    assert "upper_bound" not in exact
    torch.testing.assert_close(exact["weights"], torch.tensor([36 / 37, 1 / 37]))
    with pytest.raises(DataError, match="shared_features"):
        MGDA(num_tasks=2, upper_bound=True).backward(
            [c1 @ (theta * scale), c2 @ (theta * scale)], [theta])


@pytest.mark.parametrize("name", ["pcgrad", "cagrad", "nash_mtl", _name("upgrad")])
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
    logs = create_weighting(name, num_tasks=3, on="features").backward(
        losses, model.trunk.parameters(), shared_features=z)
    assert logs["on"] == "features"
    beta = logs["weights"].double()
    upstream = [*model.trunk.parameters(), *stem.parameters()]
    losses, z = losses_and_z()
    expected = torch.autograd.grad(z, upstream, grad_outputs=(beta @ Gz).view_as(z))
    for p, g in zip(upstream, expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    with pytest.raises(DataError, match="shared_features"):
        create_weighting(name, num_tasks=3, on="features").backward(
            losses, model.trunk.parameters())


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
        NashMTL(num_tasks=3).backward(losses, model.trunk.parameters())
        out.append(flat([p.grad for p in model.trunk.parameters()]))
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-8)


def test_cagrad_improves_the_worst_task_over_equal_weighting():
    model = TinyMTL(3)
    x, ys = data(3)
    shared = list(model.trunk.parameters())
    model.zero_grad()
    losses, _ = model.losses(x, ys, [1.0, 5.0, 0.2])
    G = torch.stack([flat(torch.autograd.grad(loss, shared, retain_graph=True)) for loss in losses])
    CAGrad(num_tasks=3, c=0.5).backward(losses, shared)
    # CAGrad's direction maximises min_k g_k·d over a ball around g0 that contains g0 itself
    d_cagrad, d_ew = flat([p.grad for p in shared]) * (1 + 0.5**2), G.sum(0)
    assert float((G @ d_cagrad).min()) > float((G @ d_ew).min())


# --------------------------------------------------------------------------- DWA, RLW, GradNorm


def test_dwa_weights_follow_loss_ratios():
    w = DynamicWeightAverage(num_tasks=2, temperature=2.0, per="step")
    p = nn.Parameter(torch.ones(()))
    assert torch.equal(w.backward([p * 1.0, p * 1.0], [p])["weights"], torch.ones(2))
    w.backward([p * 1.0, p * 1.0], [p])
    logs = w.backward([p * 0.5, p * 1.0], [p])  # still ratios of the two earlier steps: 1, 1
    torch.testing.assert_close(logs["weights"], torch.ones(2))
    logs = w.backward([p, p], [p])  # ratios 0.5 and 1
    expected = 2 * torch.softmax(torch.tensor([0.5, 1.0]) / 2.0, 0)
    torch.testing.assert_close(logs["weights"], expected)

    e = DynamicWeightAverage(num_tasks=2)  # per epoch: weights change only after end_epoch()
    for mean in ([2.0, 1.0], [1.0, 1.0]):
        for _ in range(3):
            assert torch.equal(e.backward([p * mean[0], p * mean[1]], [p])["weights"],
                               torch.ones(2))
        e.end_epoch()
    logs = e.backward([p, p], [p])
    torch.testing.assert_close(logs["weights"], 2 * torch.softmax(torch.tensor([0.25, 0.5]), 0))


def test_random_weights_are_reproducible_and_resume():
    p = nn.Parameter(torch.ones(()))
    a, b = RandomLossWeighting(num_tasks=3, seed=7), RandomLossWeighting(num_tasks=3, seed=7)
    seq_a = [a.backward([p, p, p], [p])["weights"] for _ in range(5)]
    seq_b = [b.backward([p, p, p], [p])["weights"] for _ in range(3)]
    resumed = RandomLossWeighting(num_tasks=3, seed=7)
    resumed.load_state_dict(b.state_dict())
    seq_b += [resumed.backward([p, p, p], [p])["weights"] for _ in range(2)]
    for wa, wb in zip(seq_a, seq_b, strict=True):
        torch.testing.assert_close(wa, wb)
        assert abs(float(wa.sum()) - 1) < 1e-6
    assert not torch.equal(seq_a[0], seq_a[1])
    other = RandomLossWeighting(num_tasks=3, seed=8).backward([p, p, p], [p])["weights"]
    assert not torch.equal(other, seq_a[0])


def test_gradnorm_weight_gradient_and_renormalisation():
    model = TinyMTL(2)
    x, ys = data(2)
    gn = GradNorm(num_tasks=2, alpha=1.5)
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
        GradNorm(num_tasks=2, on="features").backward(
            model.losses(x, ys)[0], model.trunk.parameters())


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
    once(create_weighting(name, num_tasks=3))
    single = grads_of(params)
    model.zero_grad()
    once(create_weighting(name, num_tasks=3), task_params=model.heads.parameters())
    for g, s in zip(grads_of(params), single, strict=True):
        torch.testing.assert_close(g, s)
    model.zero_grad()
    w = create_weighting(name, num_tasks=3)
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
        w = create_weighting(name, num_tasks=3)
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


@pytest.mark.parametrize("name", [_name("ew"), *STATELESS])
def test_masked_equals_fewer_tasks_for_stateless_methods(name):
    model = TinyMTL(3)
    x, ys = data(3)
    model.zero_grad()
    losses, _ = model.losses(x, ys, [1.0, 1.0, 3.0])
    create_weighting(name, num_tasks=3).backward(
        losses, model.trunk.parameters(), mask=[True, False, True])
    masked = flat([p.grad for p in model.trunk.parameters()])
    model.zero_grad()
    losses, _ = model.losses(x, ys, [1.0, 1.0, 3.0])
    create_weighting(name, num_tasks=2).backward([losses[0], losses[2]], model.trunk.parameters())
    torch.testing.assert_close(masked, flat([p.grad for p in model.trunk.parameters()]))


def test_all_tasks_masked_does_nothing_and_frozen_trunk_falls_back():
    model = TinyMTL(2)
    x, ys = data(2)
    losses, _ = model.losses(x, ys)
    logs = PCGrad(num_tasks=2).backward(losses, model.trunk.parameters(), mask=[False, False])
    assert all(p.grad is None for p in model.parameters()) and not logs["active"].any()
    model.trunk.requires_grad_(False)
    logs = NashMTL(num_tasks=2).backward(losses, model.trunk.parameters())
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
    weighting = create_weighting(name, num_tasks=2)
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
