r"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone & Liu, *Conflict-Averse Gradient Descent for Multi-task Learning*, NeurIPS
2021. With the average gradient ``g_0 = (1/K) Σ_k g_k``, the update maximises the worst task's
improvement within a ball around ``g_0``; its dual is::

    w* = argmin_{w ∈ simplex}  g_wᵀ g_0 + c ‖g_0‖ ‖g_w‖,        g_w = Σ_k w_k g_k
    d  = K · (g_0 + λ g_w*) / (1 + c²),                         λ = c ‖g_0‖ / ‖g_w*‖

``c = 0`` is equal weighting; ``c → ∞`` tends to MGDA.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize

from tlroutes.objectives.mtl.base import TaskBatch, non_negative
from tlroutes.objectives.mtl.gradients import GradientWeighting
from tlroutes.objectives.mtl.registry import register_weighting


def cagrad_weights(
    gram: np.ndarray, c: float = 0.5, start: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """CAGrad's inner problem: ``w* = argmin_{w ∈ simplex} g_wᵀ g_0 + c ‖g_0‖ ‖g_w‖``.

    Returns ``(w*, λ)`` with ``λ = c ‖g_0‖ / ‖g_w*‖`` (0 when ``g_w* = 0``), from the Gram matrix
    (``g_wᵀ g_0 = wᵀ M 1/K``, ``‖g_0‖² = mean(M)``), solved with scipy's SLSQP. The problem is
    invariant to a global scale of ``M``, so ``M`` is normalised by its mean diagonal first.

    Args:
        gram: the K × K Gram matrix of the task gradients.
        c: the radius of the ball relative to ``‖g_0‖`` (>= 0). Default 0.5.
        start: the initial ``w`` (default uniform), e.g. the previous step's solution.
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


@register_weighting("cagrad", gradient_based=True)
class CAGrad(GradientWeighting):
    """CAGrad: the shared update is ``K (g_0 + λ g_w*) / (1 + c²)``; heads get their own loss.

    The ``1/(1 + c²)`` rescaling and the factor K (the scale of the summed loss) follow the
    authors' code. The dual is solved with SLSQP (:func:`cagrad_weights`), warm-started from the
    previous step's solution. Logs: ``weights`` = the coefficients of ``g_k`` in ``d``;
    ``lambda``.

    Args:
        num_tasks: K.
        c: the radius of the ball relative to ``‖g_0‖`` (>= 0); the paper's convergence guarantee
            to a stationary point of the average loss needs ``c < 1``. Default 0.5.
        on: ``"params"`` (default, the paper's method) or ``"features"`` (cheaper, an
            approximation); see :class:`~tlroutes.objectives.mtl.gradients.GradientWeighting`.
    """

    def __init__(self, *, num_tasks: int, c: float = 0.5, on: str = "params") -> None:
        super().__init__(num_tasks=num_tasks, on=on)
        self.c = non_negative("c", c)
        self._last: tuple[list[int], np.ndarray] | None = None

    def _solve(self, gram: np.ndarray, batch: TaskBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        K = len(gram)
        start = self._last[1] if self._last and self._last[0] == batch.index else None
        w, lam = cagrad_weights(gram, self.c, start)
        self._last = (list(batch.index), w)  # warm start for the next step (same tasks)
        beta = (1.0 + K * lam * w) / (1.0 + self.c**2)  # K (g0 + λ g_w) / (1 + c²)
        return beta, np.ones(K), {"lambda": lam}
