r"""Nash-MTL: the Nash bargaining solution between tasks.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, *Multi-Task Learning as a
Bargaining Game*, ICML 2022. The update ``d = Σ_k α_k g_k`` maximises ``Σ_k log(d · g_k)`` in a
ball; its weights solve (their Theorem 5.1)::

    Gᵀ G α = 1 / α        (element-wise, α > 0)

so that every task gets ``d · g_k = 1/α_k > 0``. The solution is invariant to each loss's scale
(scaling ``g_k`` by ``s`` divides ``α_k`` by ``s``) and ``‖d‖² = K`` always.
"""

from __future__ import annotations

import numpy as np

from tlroutes.objectives.mtl.base import TaskBatch, positive_int
from tlroutes.objectives.mtl.gradients import GradientWeighting
from tlroutes.objectives.mtl.registry import register_weighting


def nash_weights(
    gram: np.ndarray, max_iter: int = 50, tol: float = 1e-10, ridge: float = 1e-8
) -> tuple[np.ndarray, int]:
    """The Nash bargaining weights: ``α > 0`` with ``(M α)_k = 1 / α_k`` for every task.

    ``Gᵀ G α = 1/α`` is exactly the stationarity condition of the strictly convex potential
    ``φ(α) = ½ αᵀ M α − Σ_k log α_k`` on ``α > 0``, so the solution is its unique minimiser; we
    find it with damped Newton steps (Armijo backtracking that keeps ``α > 0``), converged to
    machine precision in a few iterations. (The paper instead solves a sequence of convex
    programs with cvxpy, 20 steps by default, which only approximates this point.) The problem
    is solved on the cosine-similarity matrix ``D^{-½} M D^{-½}`` (``D = diag M``), which makes
    it independent of the tasks' gradient scales, then mapped back (``α = D^{-½} α̃``); a
    ``ridge · I`` keeps the point finite when task gradients are linearly dependent. Tasks
    with a zero gradient get ``α_k = 0``.

    Args:
        gram: the K × K Gram matrix of the task gradients.
        max_iter: Newton iterations at most. Default 50.
        tol: stop when the Newton decrement ``λ²/2`` falls below it. Default 1e-10.
        ridge: added to the diagonal of the cosine-similarity matrix. Default 1e-8.

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


@register_weighting("nash_mtl", gradient_based=True)
class NashMTL(GradientWeighting):
    """Nash-MTL: the shared update is ``Σ_k α_k g_k`` with ``Gᵀ G α = 1/α``; heads get ``α_k L_k``.

    Solved exactly (to tolerance) by :func:`nash_weights` — damped Newton on a convex potential
    instead of the paper's sequence of cvxpy programs. ``‖d‖² = K``, so the learning rate sets
    the step length. Heads get ``α_k``-weighted losses, as in the authors' code (which also clips
    the shared gradient norm at 1 by default; clip yourself if you want that).

    Args:
        num_tasks: K.
        max_iter: Newton iterations at most. Default 50 (usually fewer than 10 are used).
        on: ``"params"`` (default, the paper's method) or ``"features"`` (cheaper, an
            approximation); see :class:`~tlroutes.objectives.mtl.gradients.GradientWeighting`.
    """

    def __init__(self, *, num_tasks: int, max_iter: int = 50, on: str = "params") -> None:
        super().__init__(num_tasks=num_tasks, on=on)
        self.max_iter = positive_int("max_iter", max_iter)

    def _solve(self, gram: np.ndarray, batch: TaskBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        alpha, iters = nash_weights(gram, self.max_iter)
        return alpha, alpha, {"solver_iters": iters}
