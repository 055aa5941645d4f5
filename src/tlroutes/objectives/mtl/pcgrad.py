r"""PCGrad: project each task gradient off the gradients it conflicts with.

Yu, Kumar, Gupta, Levine, Hausman & Finn, *Gradient Surgery for Multi-Task Learning*, NeurIPS
2020. For each task i, visiting the other tasks j in a random order::

    if g_i^PC · g_j < 0:   g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j

and the shared update is ``d = Σ_i g_i^PC`` (on the scale of the summed loss). Right after the
projection against ``g_j``, ``g_i^PC · g_j = 0``; with two tasks this makes every projected
gradient, and their sum, non-conflicting with both original gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tlroutes.objectives.mtl.base import TaskBatch, check_seed, step_generator
from tlroutes.objectives.mtl.gradients import GradientWeighting
from tlroutes.objectives.mtl.registry import register_weighting


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


def random_orders(K: int, gen: torch.Generator) -> list[list[int]]:
    """For each task, the other tasks in a random order drawn from ``gen``."""
    return [[j for j in torch.randperm(K, generator=gen).tolist() if j != i] for i in range(K)]


def pcgrad_project(
    grads: Tensor, orders: Sequence[Sequence[int]] | None = None, seed: int = 0
) -> Tensor:
    """The projected task gradients ``g_i^PC`` of PCGrad, rows of a ``(K, P)`` tensor.

    Args:
        grads: the task gradients, ``(K, P)``.
        orders: for each task the order in which the others are visited; None (default) draws
            random orders from ``seed``.
        seed: used when ``orders`` is None. Default 0.
    """
    K = grads.shape[0]
    if orders is None:
        orders = random_orders(K, step_generator(seed, 0))
    gram = (grads @ grads.T).double().cpu().numpy()
    C = torch.as_tensor(pcgrad_coefficients(gram, orders), dtype=grads.dtype, device=grads.device)
    return C @ grads


@register_weighting("pcgrad", gradient_based=True)
class PCGrad(GradientWeighting):
    """PCGrad: the shared update is ``Σ_i g_i^PC``; heads get their own task's gradient.

    The projections run on the Gram matrix (:func:`pcgrad_coefficients`), exactly equivalent to
    projecting the vectors. Logs: ``weights`` = the coefficients ``β`` with
    ``Σ_i g_i^PC = Σ_k β_k g_k``; ``conflicts`` = the number of task pairs with a negative inner
    product.

    Args:
        num_tasks: K.
        seed: seed of the random task orders, drawn from ``(seed, step)`` (the step counter is a
            buffer, resumed by ``state_dict()``). Default 0.
        on: ``"params"`` (default, the paper's method) or ``"features"`` (cheaper, an
            approximation); see :class:`~tlroutes.objectives.mtl.gradients.GradientWeighting`.
    """

    def __init__(self, *, num_tasks: int, seed: int = 0, on: str = "params") -> None:
        super().__init__(num_tasks=num_tasks, on=on)
        self.seed = check_seed(seed)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def _solve(self, gram: np.ndarray, batch: TaskBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        K = len(gram)
        orders = random_orders(K, step_generator(self.seed, int(self.num_steps)))
        self.num_steps.add_(1)
        C = pcgrad_coefficients(gram, orders)
        return C.sum(axis=0), np.ones(K), {}
