r"""Dynamic Weight Average (DWA): weights from the rate at which each loss falls.

Liu, Johns & Davison, *End-to-End Multi-Task Learning with Attention*, CVPR 2019::

    r_k = L_k(t−1) / L_k(t−2),     w_k(t) = K · exp(r_k / T) / Σ_j exp(r_j / T)

A task whose loss falls slowly (large ratio) gets more weight; a large temperature ``T`` makes the
weights uniform.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tlroutes.objectives.mtl.base import TaskBatch, Weighting, choice, positive
from tlroutes.objectives.mtl.registry import register_weighting


@register_weighting("dwa")
class DynamicWeightAverage(Weighting):
    """Dynamic Weight Average: ``w = K · softmax(r / T)`` with ``r_k = L_k(t−1) / L_k(t−2)``.

    ``L_k(t)`` is the mean loss of epoch ``t`` (``per="epoch"``, the paper: call
    :meth:`end_epoch` after every epoch; until two epochs are recorded the weights are 1) or the
    loss of step ``t`` (``per="step"``: the last two calls, noisier but needs no epoch hook). A
    task with fewer than two recorded values, or a non-positive one, has ratio 1. With skipped
    tasks the softmax runs over the active tasks and their weights sum to their number. The
    history is kept in buffers (saved by ``state_dict()``).

    Args:
        num_tasks: K.
        temperature: T (> 0); a large T makes the weights uniform. Default 2.0 (the paper).
        per: ``"epoch"`` (default) or ``"step"``.
    """

    def __init__(self, *, num_tasks: int, temperature: float = 2.0, per: str = "epoch") -> None:
        super().__init__(num_tasks=num_tasks)
        self.temperature = positive("temperature", temperature)
        self.per = choice("per", per, ("epoch", "step"))
        self.register_buffer("history", torch.full((2, num_tasks), float("nan")))
        self.register_buffer("epoch_sum", torch.zeros(num_tasks))
        self.register_buffer("epoch_count", torch.zeros(num_tasks))

    def _push(self, values: Tensor, which: Tensor) -> None:
        """Append ``values`` to the history of the tasks in ``which`` (a bool mask)."""
        self.history[0] = torch.where(which, self.history[1], self.history[0])
        self.history[1] = torch.where(which, values, self.history[1])

    def ratios(self) -> Tensor:
        """``L_k(t−1) / L_k(t−2)`` per task (1 where not yet known)."""
        prev, last = self.history[0], self.history[1]
        ok = torch.isfinite(prev) & torch.isfinite(last) & (prev > 0)
        return torch.where(ok, last / prev.clamp_min(1e-30), torch.ones_like(last))

    def end_epoch(self) -> None:
        """Close an epoch: its mean loss per task becomes the newest history entry."""
        seen = self.epoch_count > 0
        if bool(seen.any()):
            self._push(self.epoch_sum / self.epoch_count.clamp_min(1), seen)
        self.epoch_sum.zero_()
        self.epoch_count.zero_()

    def _backward(self, batch: TaskBatch) -> dict:
        idx = torch.tensor(batch.index, device=self.history.device)
        r = self.ratios()[idx]
        w = len(batch.index) * torch.softmax(r / self.temperature, dim=0)
        values = batch.stacked().detach().to(self.history)
        which = torch.zeros(self.num_tasks, dtype=torch.bool, device=self.history.device)
        which[idx] = True
        if self.per == "step":
            full = torch.zeros_like(self.history[1])
            full[idx] = values
            self._push(full, which)
        else:
            self.epoch_sum.index_add_(0, idx, values)
            self.epoch_count.index_add_(0, idx, torch.ones_like(values))
        self._backward_weighted(batch, w)
        return {"weights": batch.full(w), "ratios": batch.full(r)}
