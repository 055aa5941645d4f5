r"""Fixed weights: a weighted sum of the task losses with weights the user chooses.

::

    L = Σ_k w_k L_k        (w_k ≥ 0, fixed)

The plain form of auxiliary-task learning: the main task at weight 1 and each auxiliary task at
a smaller constant weight (e.g. Liebel & Körner, *Auxiliary Tasks in Multi-task Learning*, 2018,
and most auxiliary-loss papers, which tune one constant per auxiliary). One backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from tlroutes.errors import ConfigError
from tlroutes.objectives.mtl.base import TaskBatch, Weighting
from tlroutes.objectives.mtl.registry import register_weighting


@register_weighting("fixed")
class FixedWeighting(Weighting):
    """Fixed weights: ``L = Σ_k w_k L_k``, one backward pass.

    Args:
        num_tasks: K.
        weights: K non-negative finite numbers, in task order (at least one positive); in a
            run file's ``weighting_args`` also ``{task: weight}`` (unnamed tasks: 1). Default
            None: 1 for every task (then it is equal weighting).
    """

    def __init__(self, *, num_tasks: int,
                 weights: Sequence[float] | dict[str, float] | None = None) -> None:
        super().__init__(num_tasks=num_tasks)
        if isinstance(weights, Mapping):
            raise ConfigError("weights by task name need the tasks' names and order: the "
                              "Multi-Task Learning route turns {task: weight} into a list; "
                              "here give one number per task, in task order.")
        if weights is None:
            weights = [1.0] * num_tasks
        if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
            raise ConfigError(f"weights must be a list of {num_tasks} numbers, one per task, "
                              f"got {type(weights).__name__}.")
        values = list(weights)
        if len(values) != num_tasks:
            raise ConfigError(f"weights must give {num_tasks} numbers (one per task), got "
                              f"{len(values)}.")
        for k, w in enumerate(values):
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) \
                    or w < 0:
                raise ConfigError(f"weights[{k}] must be a finite number >= 0, got {w!r}.")
        if not any(w > 0 for w in values):
            raise ConfigError("weights are all 0: at least one task must count.")
        self.register_buffer("weights", torch.tensor([float(w) for w in values]),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, weights={self.weights.tolist()}"

    def _backward(self, batch: TaskBatch) -> dict:
        w = self.weights[batch.index].cpu()
        self._backward_weighted(batch, w)
        return {"weights": batch.full(w)}
