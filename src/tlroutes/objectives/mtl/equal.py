r"""Equal weighting (EW): the plain sum of the task losses.

::

    L = Σ_k L_k

The baseline every other method is compared with (linear scalarisation with unit weights); see
e.g. Xin, Ghorbani, Garg, Firat & Gilmer, *Do Current Multi-Task Optimization Methods in Deep
Learning Even Help?*, NeurIPS 2022. One backward pass.
"""

from __future__ import annotations

import torch

from tlroutes.objectives.mtl.base import TaskBatch, Weighting
from tlroutes.objectives.mtl.registry import register_weighting


@register_weighting("ew")
class EqualWeighting(Weighting):
    """Equal weighting: ``L = Σ_k L_k`` (weights 1), one backward pass.

    Args:
        num_tasks: K.
    """

    def _backward(self, batch: TaskBatch) -> dict:
        w = torch.ones(len(batch.index))
        self._backward_weighted(batch, w)
        return {"weights": batch.full(w)}
