r"""Gradient-based multi-task weighting: GradNorm, PCGrad, MGDA, CAGrad, Nash-MTL.

Same contract as :mod:`tlroutes.objectives.weighting` (read its docstring): ``backward(losses,
shared_params, shared_features=None, task_params=None, *, mask=None)`` accumulates gradients and
returns logs.

How the gradient-manipulating methods (PCGrad, MGDA, CAGrad, Nash-MTL) work here
--------------------------------------------------------------------------------

1. One ``torch.autograd.grad`` per active task on the shared parameters gives the task gradients,
   flattened into ``G`` of shape ``(K, P)`` (K backward passes through the shared part).
2. Every one of these methods only needs inner products between task gradients, so each solves a
   ``K × K`` problem on the Gram matrix ``M = G Gᵀ`` (in float64 numpy) and returns coefficients
   ``β``; the shared update is ``d = βᵀ G``, added to the shared parameters' ``.grad``.
3. The other trained parameters (heads) get the gradient of ``Σ_k h_k L_k`` in a second backward
   restricted to them (cheap: it stops where the shared part starts). ``h_k`` follows each
   paper's reference implementation:

   ========== ==================================== ===============================
   method     shared update ``d``                  heads' loss weights ``h_k``
   ========== ==================================== ===============================
   PCGrad     ``Σ_i g_i^PC`` (projected)           1 (each head its own loss)
   MGDA       ``Σ_k α_k g_k`` (min-norm point)     ``α_k``
   CAGrad     ``K (g_0 + λ g_w) / (1 + c²)``       1
   Nash-MTL   ``Σ_k α_k g_k`` (bargaining point)   ``α_k``
   ========== ==================================== ===============================

With no shared parameter requiring grad (a frozen trunk), there is nothing to manipulate and they
fall back to one backward of the plain sum (``fallback`` is True in the logs).

Cost: step 1 is K backward passes through the shared part, so a step costs roughly
``(forward + K · backward)`` against ``(forward + backward)`` for the plain sum. Two cheaper
routes use the shared representation ``Z`` (``shared_features``) instead, with K backward passes
through the heads only and one through the trunk: MGDA's own upper bound (MGDA-UB, used whenever
``shared_features`` is given) and ``on="features"`` for PCGrad, CAGrad and Nash-MTL (an
approximation: the method is applied to per-batch feature gradients ``∂L_k/∂Z``, as LibMTL's
``rep_grad`` option does). See ``benchmarks/mtl_weighting.py``.

GradNorm is loss-based (one backward of a weighted sum) but reads per-task gradient norms on a few
shared parameters to update its weights.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

from tlroutes.errors import ConfigError, DataError
from tlroutes.objectives.weighting import (
    TaskBatch,
    Weighting,
    _check_seed,
    _positive_int,
    add_flat_grad,
    step_generator,
    task_gradients,
)

__all__ = [
    "GradNorm",
    "PCGrad",
    "MGDA",
    "CAGrad",
    "NashMTL",
    "pcgrad_coefficients",
    "pcgrad_project",
    "min_norm_weights",
    "cagrad_weights",
    "nash_weights",
]


# --------------------------------------------------------------------------- K x K solvers


def pcgrad_coefficients(gram: np.ndarray, orders: Sequence[Sequence[int]]) -> np.ndarray:
    """PCGrad's projections in the basis of the original gradients.

    Returns ``C`` (K × K) with ``g_i^PC = Σ_j C[i, j] g_j``. For each task i, in ``orders[i]``
    (a permutation of the other tasks): if ``g_i^PC · g_j < 0``, subtract the projection,
    ``g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j``. Inner products come from ``gram``.
    """
    K = len(gram)
    C = np.eye(K)
    for i in range(K):
        for j in orders[i]:
            if j == i or gram[j, j] <= 0:
                continue
            dot = C[i] @ gram[:, j]
            if dot < 0:
                C[i, j] -= dot / gram[j, j]
    return C


def _random_orders(K: int, gen: torch.Generator) -> list[list[int]]:
    return [[j for j in torch.randperm(K, generator=gen).tolist() if j != i] for i in range(K)]


def pcgrad_project(
    grads: Tensor, orders: Sequence[Sequence[int]] | None = None, seed: int = 0
) -> Tensor:
    """The projected task gradients ``g_i^PC`` of PCGrad, rows of a ``(K, P)`` tensor.

    Args:
        grads: the task gradients, ``(K, P)``.
        orders: for each task the order in which the others are visited; None (default) draws
            random orders from ``seed``.
        seed: used when ``orders`` is None.
    """
    K = grads.shape[0]
    if orders is None:
        orders = _random_orders(K, step_generator(seed, 0))
    gram = (grads @ grads.T).double().cpu().numpy()
    C = torch.as_tensor(pcgrad_coefficients(gram, orders), dtype=grads.dtype, device=grads.device)
    return C @ grads


def _min_norm_pair(v11: float, v12: float, v22: float) -> tuple[float, float]:
    """``argmin_γ∈[0,1] ‖γ v1 + (1−γ) v2‖²`` from inner products: ``(γ, squared norm)``."""
    denom = v11 - 2 * v12 + v22
    gamma = 0.5 if denom <= 0 else min(1.0, max(0.0, (v22 - v12) / denom))
    return gamma, gamma * gamma * v11 + 2 * gamma * (1 - gamma) * v12 + (1 - gamma) ** 2 * v22


def min_norm_weights(gram: np.ndarray, max_iter: int = 250, tol: float = 1e-5) -> np.ndarray:
    """The minimum-norm point of the convex hull of the task gradients (MGDA's sub-problem).

    ``α* = argmin_{α ∈ simplex} ‖Σ_k α_k g_k‖² = αᵀ M α``, solved as in Sener & Koltun
    (Algorithm 2): start from the best pair (closed form), then Frank-Wolfe steps towards the
    vertex ``t = argmin_t (Mα)_t`` with an exact line search (the two-point closed form), until
    ``α`` moves by less than ``tol`` (L1; 1e-5 as in the authors' code) or ``max_iter`` steps.
    """
    gram = np.asarray(gram, dtype=np.float64)
    K = len(gram)
    alpha = np.zeros(K)
    if K == 1:
        return np.ones(1)
    best = math.inf
    for i in range(K):
        for j in range(i + 1, K):
            gamma, cost = _min_norm_pair(gram[i, i], gram[i, j], gram[j, j])
            if cost < best:
                best = cost
                alpha[:] = 0
                alpha[i], alpha[j] = gamma, 1 - gamma
    if K == 2:
        return alpha
    m_alpha = gram @ alpha
    for _ in range(max_iter):
        t = int(np.argmin(m_alpha))
        gamma, _ = _min_norm_pair(float(alpha @ m_alpha), float(m_alpha[t]), float(gram[t, t]))
        step = 2 * (1 - gamma) * (1 - alpha[t])  # ‖Δα‖_1
        alpha *= gamma
        alpha[t] += 1 - gamma
        m_alpha = gamma * m_alpha + (1 - gamma) * gram[t]
        if step < tol:
            break
    return alpha


def cagrad_weights(
    gram: np.ndarray, c: float = 0.5, start: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """CAGrad's inner problem: ``w* = argmin_{w ∈ simplex} g_wᵀ g_0 + c ‖g_0‖ ‖g_w‖``.

    Returns ``(w*, λ)`` with ``λ = c ‖g_0‖ / ‖g_w*‖`` (0 when ``g_w* = 0``), from the Gram matrix
    (``g_wᵀ g_0 = wᵀ M 1/K``, ``‖g_0‖² = mean(M)``), solved with scipy's SLSQP. The problem is
    invariant to a global scale of ``M``, so ``M`` is normalised by its mean diagonal first.
    ``start`` (default uniform) is the initial ``w``, e.g. the previous step's solution.
    """
    gram = np.asarray(gram, dtype=np.float64)
    K = len(gram)
    scale = float(np.mean(np.diag(gram)))
    if K == 1 or scale <= 0:
        return np.ones(K) / K, 0.0
    M = gram / scale
    b = M.mean(axis=1)
    radius = c * math.sqrt(max(M.mean(), 0.0))

    def objective(w):
        norm = math.sqrt(max(w @ M @ w, 0.0) + 1e-12)
        return w @ b + radius * norm, b + radius * (M @ w) / norm

    w0 = np.full(K, 1.0 / K) if start is None or len(start) != K else np.asarray(start, float)
    res = minimize(
        objective, w0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * K,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(K)},),
        options={"maxiter": 100, "ftol": 1e-10},
    )
    w = np.clip(res.x, 0.0, None)
    w = w / w.sum()
    gw_norm = math.sqrt(max(w @ M @ w, 0.0))
    lam = radius / gw_norm if gw_norm > 1e-12 else 0.0
    return w, lam


def nash_weights(
    gram: np.ndarray, max_iter: int = 50, tol: float = 1e-10, ridge: float = 1e-8
) -> tuple[np.ndarray, int]:
    """The Nash bargaining weights: ``α > 0`` with ``(M α)_k = 1 / α_k`` for every task.

    Navon et al. characterise the solution by ``Gᵀ G α = 1/α`` (their Theorem 5.1). That is
    exactly the stationarity condition of the strictly convex potential
    ``φ(α) = ½ αᵀ M α − Σ_k log α_k`` on ``α > 0``, so the solution is its unique minimiser; we
    find it with damped Newton steps (Armijo backtracking that keeps ``α > 0``), converged to
    machine precision in a few iterations. (The paper instead solves a sequence of convex
    programs with cvxpy, 20 steps by default, which only approximates this point.) The problem
    is solved on the cosine-similarity matrix ``D^{-½} M D^{-½}`` (``D = diag M``), which makes
    it independent of the tasks' gradient scales, then mapped back (``α = D^{-½} α̃``); a
    ``ridge · I`` keeps the point finite when task gradients are linearly dependent. Tasks
    with a zero gradient get ``α_k = 0``.

    Returns ``(α, Newton iterations)``.
    """
    gram = np.asarray(gram, dtype=np.float64)
    K = len(gram)
    alpha = np.zeros(K)
    live = np.flatnonzero(np.diag(gram) > 0)
    if live.size == 0:
        return alpha, 0
    M = gram[np.ix_(live, live)]
    norms = np.sqrt(np.diag(M))
    M = M / np.outer(norms, norms) + ridge * np.eye(live.size)
    a = np.ones(live.size)

    def phi(x):
        return 0.5 * x @ M @ x - np.log(x).sum()

    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        grad = M @ a - 1.0 / a
        hess = M + np.diag(1.0 / a**2)
        step = -np.linalg.solve(hess, grad)
        decrement = -grad @ step
        if decrement < 2 * tol:
            break
        t = 1.0
        while np.any(a + t * step <= 0):
            t *= 0.5
        f0 = phi(a)
        while phi(a + t * step) > f0 - 0.25 * t * decrement and t > 1e-12:
            t *= 0.5
        a = a + t * step
    alpha[live] = a / norms
    return alpha, it


# --------------------------------------------------------------------------- the methods


class _GradientMethod(Weighting):
    """Per-task gradients on the shared parameters → ``K × K`` Gram problem → combined update."""

    gradient_based = True

    def __init__(self, num_tasks: int, on: str = "params") -> None:
        super().__init__(num_tasks)
        if on not in ("params", "features"):
            raise ConfigError(f"on must be 'params' or 'features', got {on!r}.")
        self.on = on

    @abc.abstractmethod
    def _solve(self, gram: np.ndarray, batch: TaskBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        """Return ``(β, head weights, logs)`` for the active tasks."""

    def _backward(self, batch: TaskBatch) -> dict:
        if not batch.shared:
            w = torch.ones(len(batch.index))
            self._backward_weighted(batch, w)
            return {"weights": batch.full(w), "fallback": True}
        if self.on == "features":
            return self._backward_features(batch)
        G, used = task_gradients(batch.losses, batch.shared)
        gram = (G @ G.T).double().cpu().numpy()
        beta, head_w, logs = self._solve(gram, batch)
        d = torch.as_tensor(beta, dtype=G.dtype, device=G.device) @ G
        add_flat_grad(batch.shared, d, used)
        self._backward_task_params(batch, torch.as_tensor(head_w, dtype=torch.float32))
        logs["weights"] = batch.full(beta)
        logs["conflicts"] = int((np.triu(gram, 1) < 0).sum())
        return logs

    def _backward_features(self, batch: TaskBatch) -> dict:
        """The representation-gradient variant: solve on ``∂L_k/∂Z``, backprop ``βᵀ G_Z``."""
        Z = _features_or_raise(batch, f"{type(self).__name__}(on='features')")
        Gz, _ = task_gradients(batch.losses, [Z])
        gram = (Gz @ Gz.T).double().cpu().numpy()
        beta, head_w, logs = self._solve(gram, batch)
        dz = (torch.as_tensor(beta, dtype=Gz.dtype, device=Gz.device) @ Gz).view_as(Z)
        self._backward_task_params(batch, torch.as_tensor(head_w, dtype=torch.float32), stop_at=Z)
        torch.autograd.backward(Z, grad_tensors=dz.to(Z.dtype))
        logs["weights"] = batch.full(beta)
        logs["conflicts"] = int((np.triu(gram, 1) < 0).sum())
        logs["on"] = "features"
        return logs


def _features_or_raise(batch: TaskBatch, who: str) -> Tensor:
    Z = batch.features
    if Z is None or not Z.requires_grad:
        raise DataError(
            f"{who} needs shared_features: the shared representation the heads read, a tensor "
            "that requires grad (do not detach it)."
        )
    return Z


class PCGrad(_GradientMethod):
    r"""PCGrad: project each task gradient off the gradients it conflicts with.

    Yu, Kumar, Gupta, Levine, Hausman & Finn, *Gradient Surgery for Multi-Task Learning*,
    NeurIPS 2020. For each task i, visiting the other tasks j in a random order::

        if g_i^PC · g_j < 0:   g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j

    and the shared update is ``Σ_i g_i^PC`` (on the scale of the summed loss). Right after the
    projection against ``g_j``, ``g_i^PC · g_j = 0``; with two tasks this makes every projected
    gradient, and their sum, non-conflicting with both original gradients. Heads get their own
    task's ordinary gradient. The projections run on the Gram matrix
    (:func:`pcgrad_coefficients`), exactly equivalent to projecting the vectors.
    Logs: ``weights`` = the coefficients ``β`` with ``Σ_i g_i^PC = Σ_k β_k g_k``; ``conflicts`` =
    the number of task pairs with a negative inner product.

    Args:
        num_tasks: K.
        seed: seed of the random task orders, drawn from ``(seed, step)`` (the step counter is a
            buffer, resumed by ``state_dict()``). Default 0.
        on: ``"params"`` (default, the paper's method: task gradients on the shared parameters,
            K backward passes through the trunk) or ``"features"`` (an approximation, cheaper:
            task gradients w.r.t. ``shared_features`` Z — K backward passes through the heads
            only —, the method applied to them, and the combined ``∂/∂Z`` back-propagated once
            through everything upstream of Z; conflicts are then measured between per-batch
            feature gradients rather than parameter gradients).
    """

    name = "pcgrad"

    def __init__(self, num_tasks: int, seed: int = 0, on: str = "params") -> None:
        super().__init__(num_tasks, on)
        self.seed = _check_seed(seed)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def _solve(self, gram, batch):
        K = len(gram)
        orders = _random_orders(K, step_generator(self.seed, int(self.num_steps)))
        self.num_steps.add_(1)
        C = pcgrad_coefficients(gram, orders)
        return C.sum(axis=0), np.ones(K), {}


class MGDA(_GradientMethod):
    r"""MGDA: descend along the minimum-norm point of the convex hull of the task gradients.

    Sener & Koltun, *Multi-Task Learning as Multi-Objective Optimization*, NeurIPS 2018::

        α* = argmin_{α ∈ simplex} ‖Σ_k α_k g_k‖²,     L = Σ_k α*_k L_k

    ``α*`` is found by Frank-Wolfe (:func:`min_norm_weights`). The resulting direction decreases
    every task loss (or is zero at a Pareto-stationary point). The weights sum to 1.

    **MGDA-UB** (the paper's upper bound, its fast variant): when ``shared_features`` ``Z`` is
    given, the task gradients are taken w.r.t. ``Z`` instead of the shared parameters — K cheap
    backward passes through the heads only — and then one ordinary backward of
    ``Σ α_k L_k`` updates everything. Otherwise the exact MGDA takes the gradients on the shared
    parameters. Heads always get ``α_k``-weighted losses.

    Args:
        num_tasks: K.
        normalization: how task gradients are scaled before the min-norm problem (the weights are
            then applied to the raw losses, as in the paper's code): ``"none"`` (default),
            ``"l2"`` (by ``‖g_k‖``), ``"loss"`` (by ``L_k``), ``"loss+"`` (by ``L_k ‖g_k‖``).
        upper_bound: None (default): MGDA-UB whenever ``shared_features`` is given; True:
            always (``shared_features`` required); False: never.
        max_iter: Frank-Wolfe iterations. Default 250.
    """

    name = "mgda"
    _NORMS = ("none", "l2", "loss", "loss+")

    def __init__(
        self, num_tasks: int, normalization: str = "none", upper_bound: bool | None = None,
        max_iter: int = 250,
    ) -> None:
        super().__init__(num_tasks)
        if normalization not in self._NORMS:
            raise ConfigError(
                f"normalization must be one of {', '.join(self._NORMS)}; got {normalization!r}."
            )
        if upper_bound not in (None, True, False):
            raise ConfigError(f"upper_bound must be None, True or False, got {upper_bound!r}.")
        self.normalization = normalization
        self.upper_bound = upper_bound
        self.max_iter = _positive_int("max_iter", max_iter)

    def _weights(self, gram: np.ndarray, batch: TaskBatch) -> np.ndarray:
        scale = np.ones(len(gram))
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        if self.normalization in ("loss", "loss+"):
            values = np.abs(batch.stacked().detach().double().cpu().numpy())
            scale = values * (norms if self.normalization == "loss+" else 1.0)
        elif self.normalization == "l2":
            scale = norms
        scale = np.where(scale > 0, scale, 1.0)
        return min_norm_weights(gram / np.outer(scale, scale), self.max_iter)

    def _solve(self, gram, batch):
        alpha = self._weights(gram, batch)
        return alpha, alpha, {"min_norm": float(math.sqrt(max(alpha @ gram @ alpha, 0.0)))}

    def _backward(self, batch: TaskBatch) -> dict:
        use_ub = self.upper_bound if self.upper_bound is not None else batch.features is not None
        if not use_ub:
            return super()._backward(batch)
        Z = _features_or_raise(batch, "MGDA(upper_bound=True)")
        Gz, _ = task_gradients(batch.losses, [Z])
        gram = (Gz @ Gz.T).double().cpu().numpy()
        alpha = self._weights(gram, batch)
        self._backward_weighted(batch, torch.as_tensor(alpha, dtype=torch.float32))
        return {
            "weights": batch.full(alpha),
            "upper_bound": True,
            "min_norm": float(math.sqrt(max(alpha @ gram @ alpha, 0.0))),
        }


class CAGrad(_GradientMethod):
    r"""CAGrad: conflict-averse gradient descent.

    Liu, Liu, Jin, Stone & Liu, *Conflict-Averse Gradient Descent for Multi-task Learning*,
    NeurIPS 2021. With the average gradient ``g_0 = (1/K) Σ_k g_k``, the update maximises the
    worst task's improvement within a ball around ``g_0``; its dual is::

        w* = argmin_{w ∈ simplex}  g_wᵀ g_0 + c ‖g_0‖ ‖g_w‖,        g_w = Σ_k w_k g_k
        d  = K · (g_0 + λ g_w*) / (1 + c²),                         λ = c ‖g_0‖ / ‖g_w*‖

    ``c = 0`` is equal weighting; ``c → ∞`` tends to MGDA. The ``1/(1 + c²)`` rescaling and the
    factor K (the scale of the summed loss) follow the authors' code; heads get their own task's
    ordinary gradient. The dual is solved with SLSQP (:func:`cagrad_weights`). Logs: ``weights``
    = the coefficients of ``g_k`` in ``d``.

    Args:
        num_tasks: K.
        c: the radius of the ball relative to ``‖g_0‖``; the paper's convergence guarantee to a
            stationary point of the average loss needs ``0 ≤ c < 1``. Default 0.5.
        on: ``"params"`` (default, the paper's method: task gradients on the shared parameters,
            K backward passes through the trunk) or ``"features"`` (an approximation, cheaper:
            task gradients w.r.t. ``shared_features`` Z — K backward passes through the heads
            only —, the method applied to them, and the combined ``∂/∂Z`` back-propagated once
            through everything upstream of Z; conflicts are then measured between per-batch
            feature gradients rather than parameter gradients).
    """

    name = "cagrad"

    def __init__(self, num_tasks: int, c: float = 0.5, on: str = "params") -> None:
        super().__init__(num_tasks, on)
        if isinstance(c, bool) or not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
            raise ConfigError(f"c must be a non-negative number, got {c!r}.")
        self.c = float(c)
        self._last: tuple[list[int], np.ndarray] | None = None

    def _solve(self, gram, batch):
        K = len(gram)
        start = self._last[1] if self._last and self._last[0] == batch.index else None
        w, lam = cagrad_weights(gram, self.c, start)
        self._last = (list(batch.index), w)  # warm start for the next step (same tasks)
        beta = (1.0 + K * lam * w) / (1.0 + self.c**2)  # K (g0 + λ g_w) / (1 + c²)
        return beta, np.ones(K), {"lambda": lam}


class NashMTL(_GradientMethod):
    r"""Nash-MTL: the Nash bargaining solution between tasks.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, *Multi-Task Learning as a
    Bargaining Game*, ICML 2022. The update ``d = Σ_k α_k g_k`` maximises ``Σ_k log(d · g_k)``
    in a ball; its weights solve::

        Gᵀ G α = 1 / α        (element-wise, α > 0)

    so that every task gets ``d · g_k = 1/α_k > 0``. The solution is invariant to each loss's
    scale (scaling ``g_k`` by ``s`` divides ``α_k`` by ``s``) and ``‖d‖² = K`` always, so the
    learning rate sets the step length. Solved exactly (to tolerance) by :func:`nash_weights`:
    damped Newton on the convex potential ``½ αᵀ M α − Σ log α_k`` whose stationarity condition
    is the equation above — instead of the paper's sequence of cvxpy programs. Heads get
    ``α_k``-weighted losses, as in the authors' code (which also clips the shared gradient norm
    at 1 by default; clip yourself if you want that).

    Args:
        num_tasks: K.
        max_iter: Newton iterations. Default 50 (usually fewer than 10 are used).
        on: ``"params"`` (default, the paper's method: task gradients on the shared parameters,
            K backward passes through the trunk) or ``"features"`` (an approximation, cheaper:
            task gradients w.r.t. ``shared_features`` Z — K backward passes through the heads
            only —, the method applied to them, and the combined ``∂/∂Z`` back-propagated once
            through everything upstream of Z; conflicts are then measured between per-batch
            feature gradients rather than parameter gradients).
    """

    name = "nash_mtl"

    def __init__(self, num_tasks: int, max_iter: int = 50, on: str = "params") -> None:
        super().__init__(num_tasks, on)
        self.max_iter = _positive_int("max_iter", max_iter)

    def _solve(self, gram, batch):
        alpha, iters = nash_weights(gram, self.max_iter)
        return alpha, alpha, {"solver_iters": iters}


class GradNorm(Weighting):
    r"""GradNorm: learn loss weights that balance the tasks' gradient norms.

    Chen, Badrinarayanan, Lee & Rabinovich, *GradNorm: Gradient Normalization for Adaptive Loss
    Balancing in Deep Multitask Networks*, ICML 2018. With learned weights ``w_k`` and
    ``G_k = ‖∇_W w_k L_k‖`` on some shared weights ``W``::

        L̃_k = L_k(t) / L_k(0),   r_k = L̃_k / mean_j L̃_j
        L_grad = Σ_k | G_k − mean_j(G_j) · r_k^α |      (the target treated as a constant)

    The model is trained on ``Σ_k w_k L_k`` (one backward, ``w`` held constant there); ``w`` gets
    the gradient of ``L_grad`` (computed in closed form, ``sign(G_k − target_k) · ‖∇_W L_k‖``) and
    is updated by *your* optimiser — give it ``weighting.parameters()``. As in the paper the
    weights are renormalised to sum to K; this happens at the start of each ``backward()``,
    i.e. right after the previous optimiser step. ``L_k(0)`` is task k's first recorded loss
    (a buffer). Gradient norms cost one partial backward per task, down to ``W``.

    Args:
        num_tasks: K.
        alpha: the restoring force towards balanced training rates. Default 1.5.
        on: where the gradient norms are taken: ``"last"`` (default, the paper's choice: the last
            shared layer, i.e. the last shared parameter with ≥ 2 dimensions in the order given),
            ``"all"`` (every shared parameter; exact but K full backward passes) or
            ``"features"`` (the shared representation ``shared_features``, cheapest).
        norm_params: explicit parameters for ``W`` (overrides ``on``). Default None.
    """

    name = "gradnorm"

    def __init__(
        self, num_tasks: int, alpha: float = 1.5, on: str = "last",
        norm_params: Iterable[Tensor] | None = None,
    ) -> None:
        super().__init__(num_tasks)
        if isinstance(alpha, bool) or not (
            isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0
        ):
            raise ConfigError(f"alpha must be a non-negative number, got {alpha!r}.")
        if on not in ("last", "all", "features"):
            raise ConfigError(f"on must be 'last', 'all' or 'features', got {on!r}.")
        self.alpha, self.on = float(alpha), on
        self._norm_params = None if norm_params is None else list(norm_params)
        self.weights = nn.Parameter(torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.full((num_tasks,), float("nan")))

    def _norm_targets(self, batch: TaskBatch) -> list[Tensor]:
        if self._norm_params is not None:
            return [p for p in self._norm_params if p.requires_grad]
        if self.on == "features":
            if batch.features is None or not batch.features.requires_grad:
                raise DataError(
                    "GradNorm(on='features') needs shared_features, a tensor in the graph that "
                    "requires grad."
                )
            return [batch.features]
        if self.on == "all":
            return batch.shared
        matrices = [p for p in batch.shared if p.dim() >= 2]
        return matrices[-1:] or batch.shared[-1:]

    def _backward(self, batch: TaskBatch) -> dict:
        with torch.no_grad():  # the paper's renormalisation, after the last optimiser step
            w_all = self.weights.clamp_min(1e-6)
            self.weights.copy_(w_all * (self.num_tasks / w_all.sum()))
        idx = torch.tensor(batch.index, device=self.weights.device)
        w = self.weights.detach()[idx]
        losses = batch.stacked().detach().to(w)
        init = self.initial_losses[idx]
        init = torch.where(torch.isnan(init), losses, init)
        self.initial_losses[idx] = init
        targets = self._norm_targets(batch)
        if targets:
            norms = []
            for loss in batch.losses:
                if not loss.requires_grad:
                    norms.append(torch.zeros((), device=w.device))
                    continue
                grads = torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True)
                sq = sum((g.double().pow(2).sum() for g in grads if g is not None),
                         torch.zeros((), dtype=torch.float64, device=targets[0].device))
                norms.append(sq.sqrt().to(w))
            n = torch.stack(norms)
            G = w * n
            ratio = losses / init.clamp_min(1e-12)
            r = ratio / ratio.mean().clamp_min(1e-12)
            target = G.mean() * r.pow(self.alpha)
            grad_w = torch.zeros_like(self.weights)
            grad_w[idx] = torch.sign(G - target) * n
            if self.weights.grad is None:
                self.weights.grad = grad_w
            else:
                self.weights.grad.add_(grad_w)
            extra = {"grad_norms": batch.full(n.cpu())}
        else:
            extra = {"grad_norms": torch.zeros(self.num_tasks)}
        self._backward_weighted(batch, w)
        return {"weights": batch.full(w.cpu()), **extra}
