r"""MGDA: descend along the minimum-norm point of the convex hull of the task gradients.

Sener & Koltun, *Multi-Task Learning as Multi-Objective Optimization*, NeurIPS 2018 (after
Désidéri, *Multiple-gradient descent algorithm (MGDA) for multiobjective optimization*, 2012)::

    α* = argmin_{α ∈ simplex} ‖Σ_k α_k g_k‖² = αᵀ M α,      L = Σ_k α*_k L_k

The resulting direction decreases every task loss (or is zero at a Pareto-stationary point).

The min-norm problem is solved exactly — not by the paper's Frank-Wolfe iterations, whose
``‖Δα‖ < 1e-5`` stop can end far from the solution when gradients conflict strongly (the hull is
then a thin sliver far from the origin and Frank-Wolfe zig-zags) — by Wolfe's algorithm for the
nearest point of a polytope (P. Wolfe, *Finding the nearest point in a polytope*, Mathematical
Programming 11, 1976): an active-set method that ends, after finitely many steps, at the exact
minimiser of ``αᵀ M α`` over the affine hull of a set of vertices whose weights are positive,
certified optimal by ``(M α)_k ≥ αᵀ M α`` for every k (up to a tolerance).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tlroutes.errors import ConfigError
from tlroutes.objectives.mtl.base import TaskBatch, positive_int
from tlroutes.objectives.mtl.gradients import GradientWeighting, features_or_raise, task_gradients
from tlroutes.objectives.mtl.registry import register_weighting

#: weights at or below this are taken as 0 (dropped from the active set); the weights lie in [0, 1]
_ZERO_WEIGHT = 1e-12


def _affine_minimizer(M: np.ndarray) -> np.ndarray:
    """``argmin μᵀ M μ`` subject to ``Σ μ = 1`` (μ of any sign): the KKT system, least squares.

    ``[[M, −1], [1ᵀ, 0]] [μ; ν] = [0; 1]``. It is non-singular when the vertices are affinely
    independent, which Wolfe's algorithm keeps; least squares covers rounding near that edge.
    """
    n = len(M)
    A = np.zeros((n + 1, n + 1))
    A[:n, :n] = M
    A[:n, n] = -1.0
    A[n, :n] = 1.0
    b = np.zeros(n + 1)
    b[n] = 1.0
    return np.linalg.lstsq(A, b, rcond=None)[0][:n]


def min_norm_weights(gram: np.ndarray, *, max_iter: int = 250, tol: float = 1e-12) -> np.ndarray:
    """The minimum-norm point of the convex hull of the task gradients (MGDA's sub-problem).

    Returns ``α* = argmin_{α ∈ simplex} αᵀ M α`` for the Gram matrix ``M = G Gᵀ``, by Wolfe's
    algorithm (see the module docstring). ``M`` is first divided by its largest diagonal entry
    (``α*`` does not change), so ``tol`` is relative to the longest squared gradient norm.

    Args:
        gram: the K × K Gram matrix of the task gradients.
        max_iter: a bound on the major iterations (Wolfe's algorithm needs about K). Default 250.
        tol: stop when ``αᵀ M α − min_k (M α)_k ≤ tol`` (scaled ``M``); the objective is then
            within ``2 · tol`` of its minimum. Default 1e-12, well above the rounding of the
            scaled inner products (about ``K · 1e-16``).
    """
    M = np.asarray(gram, dtype=np.float64)
    K = len(M)
    if K == 1:
        return np.ones(1)
    scale = float(np.max(np.diag(M)))
    if not scale > 0:  # every gradient is zero: every α is optimal
        return np.full(K, 1.0 / K)
    M = M / scale
    S = [int(np.argmin(np.diag(M)))]  # start at the shortest gradient
    lam = np.ones(1)
    for _ in range(max_iter):
        Mx = M[:, S] @ lam  # x · g_k for every k, with x = Σ_{i∈S} λ_i g_i
        t = int(np.argmin(Mx))
        if float(lam @ Mx[S]) - Mx[t] <= tol or t in S:  # optimal (t in S: no progress left)
            break
        before = list(S)
        S, lam = [*S, t], np.append(lam, 0.0)
        while True:  # minor cycle: move to the affine minimiser of S, dropping vertices on the way
            mu = _affine_minimizer(M[np.ix_(S, S)])
            if np.all(mu > _ZERO_WEIGHT):
                lam = mu
                break
            # walk from λ towards μ until the first weight reaches zero (θ = 0 when a weight is
            # already 0 and would go negative), then drop the vertices whose weight is 0
            leaving = mu <= _ZERO_WEIGHT
            gap = lam[leaving] - mu[leaving]
            ratios = np.where(gap > 0, lam[leaving] / np.where(gap > 0, gap, 1.0), 0.0)
            theta = float(np.min(ratios))
            lam = lam + theta * (mu - lam)
            keep = lam > _ZERO_WEIGHT
            if not keep.any():
                keep[int(np.argmax(lam))] = True
            S, lam = [s for s, k in zip(S, keep, strict=True) if k], lam[keep]
            lam = lam / lam.sum()
        if before == S:  # the new vertex left at once: rounding-level progress only, stop
            break
    alpha = np.zeros(K)
    alpha[S] = np.clip(lam, 0.0, None)
    return alpha / alpha.sum()


@register_weighting("mgda", gradient_based=True)
class MGDA(GradientWeighting):
    """MGDA: the shared update is the min-norm point ``Σ_k α*_k g_k``; heads get ``α*_k L_k``.

    ``α*`` is solved exactly (:func:`min_norm_weights`); the weights sum to 1.

    **MGDA-UB** (the paper's upper bound, its fast variant): when ``shared_features`` ``Z`` is
    given, the task gradients are taken w.r.t. ``Z`` instead of the shared parameters — K cheap
    backward passes through the heads only — and then one ordinary backward of
    ``Σ α_k L_k`` updates everything. Otherwise the exact MGDA takes the gradients on the shared
    parameters.

    Args:
        num_tasks: K.
        normalization: how task gradients are scaled before the min-norm problem (the weights are
            then applied to the raw losses, as in the paper's code): ``"none"`` (default),
            ``"l2"`` (by ``‖g_k‖``), ``"loss"`` (by ``L_k``), ``"loss+"`` (by ``L_k ‖g_k‖``).
        upper_bound: None (default): MGDA-UB whenever ``shared_features`` is given; True:
            always (``shared_features`` required); False: never.
        max_iter: a bound on the min-norm solver's iterations (it needs about K). Default 250.
    """

    _NORMS = ("none", "l2", "loss", "loss+")

    def __init__(
        self, *, num_tasks: int, normalization: str = "none", upper_bound: bool | None = None,
        max_iter: int = 250,
    ) -> None:
        super().__init__(num_tasks=num_tasks)
        if normalization not in self._NORMS:
            raise ConfigError(
                f"normalization must be one of {', '.join(self._NORMS)}; got {normalization!r}."
            )
        if upper_bound not in (None, True, False):
            raise ConfigError(f"upper_bound must be None, True or False, got {upper_bound!r}.")
        self.normalization = normalization
        self.upper_bound = upper_bound
        self.max_iter = positive_int("max_iter", max_iter)

    def _weights(self, gram: np.ndarray, batch: TaskBatch) -> np.ndarray:
        scale = np.ones(len(gram))
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        if self.normalization in ("loss", "loss+"):
            values = np.abs(batch.stacked().detach().double().cpu().numpy())
            scale = values * (norms if self.normalization == "loss+" else 1.0)
        elif self.normalization == "l2":
            scale = norms
        scale = np.where(scale > 0, scale, 1.0)
        return min_norm_weights(gram / np.outer(scale, scale), max_iter=self.max_iter)

    def _solve(self, gram: np.ndarray, batch: TaskBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        alpha = self._weights(gram, batch)
        return alpha, alpha, {"min_norm": float(math.sqrt(max(alpha @ gram @ alpha, 0.0)))}

    def _backward(self, batch: TaskBatch) -> dict:
        use_ub = self.upper_bound if self.upper_bound is not None else batch.features is not None
        if not use_ub:
            return super()._backward(batch)
        Z = features_or_raise(batch, "MGDA(upper_bound=True)")
        Gz, _ = task_gradients(batch.losses, [Z])
        gram = (Gz @ Gz.T).double().cpu().numpy()
        alpha = self._weights(gram, batch)
        self._backward_weighted(batch, torch.as_tensor(alpha))
        return {
            "weights": batch.full(alpha),
            "upper_bound": True,
            "min_norm": float(math.sqrt(max(alpha @ gram @ alpha, 0.0))),
        }
