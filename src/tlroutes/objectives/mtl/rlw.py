r"""Random Loss Weighting (RLW): fresh random weights every step.

Lin, Ye, Xu, Shi & Zhang, *Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning*, TMLR 2022::

    ε ~ N(0, I_K),    w = softmax(ε),    L = Σ_k w_k L_k

The weights sum to 1 (the paper's normalisation), so the gradient is on the scale of a mean, not a
sum, of the losses.
"""

from __future__ import annotations

import torch

from tlroutes.objectives.mtl.base import TaskBatch, Weighting, check_seed, step_generator
from tlroutes.objectives.mtl.registry import register_weighting


@register_weighting("rlw")
class RandomLossWeighting(Weighting):
    """Random loss weighting: ``w = softmax(ε)``, ``ε ~ N(0, I)`` drawn afresh every step.

    With skipped tasks the softmax runs over the active tasks only (ε is still drawn for all K,
    so the sequence does not depend on the masks). ε comes from a :class:`torch.Generator`
    seeded from ``(seed, step)``; the step counter is a buffer, so a resumed run continues the
    same sequence.

    Args:
        num_tasks: K.
        seed: the seed of the weight sequence (an integer >= 0). Default 0.
    """

    def __init__(self, *, num_tasks: int, seed: int = 0) -> None:
        super().__init__(num_tasks=num_tasks)
        self.seed = check_seed(seed)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def _backward(self, batch: TaskBatch) -> dict:
        gen = step_generator(self.seed, int(self.num_steps))
        # float32 whatever the default dtype: the sequence of weights is then one per seed
        eps = torch.randn(self.num_tasks, generator=gen, dtype=torch.float32)
        self.num_steps.add_(1)
        w = torch.softmax(eps[batch.index], dim=0)
        self._backward_weighted(batch, w)
        return {"weights": batch.full(w)}
