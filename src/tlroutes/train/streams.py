"""Streams: batches drawn from in-memory splits, with no DataLoader in the way.

A :class:`Stream` is stateless: the batch at global step ``i`` is a pure function of the seed and
``i``. That makes resuming exact (no sampler state to save), lets a short stream cycle while a
long one sets the epoch length, and lets data-parallel ranks take disjoint slices of the same
global batch — so two processes see exactly what one process would.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tlroutes import checks
from tlroutes.errors import DataError
from tlroutes.problem import Split, on_device
from tlroutes.train.seeding import derive_seed


class Stream:
    """Shuffled mini-batches from one :class:`~tlroutes.problem.Split`.

    Args:
        split: the data, held in memory.
        batch_size: samples per *global* batch (summed over data-parallel ranks). Default 64.
        shuffle: reshuffle every pass through the data. Default True.
        drop_last: drop a final short batch. Default False.
        seed: seeds the shuffles; pass pass ``i`` uses ``derive_seed(seed, "pass", i)``.
        rank, world_size: this process's share of each global batch is the slice
            ``rank::world_size``. Default 0 and 1 (a single process).
        name: used in error messages.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int = 64,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        name: str = "train",
    ) -> None:
        n = len(split)
        if n == 0:
            raise DataError(f"stream '{name}' has no samples; every training split needs data.")
        checks.batch_size(name, batch_size, world_size)
        self.x, self.y = split.x, split.y
        self.batch_size = min(batch_size, n) if not drop_last else batch_size
        self.shuffle, self.drop_last, self.seed, self.name = shuffle, drop_last, seed, name
        self.rank, self.world_size = rank, world_size
        self.n = n
        per_pass = n / self.batch_size
        self.steps_per_pass = math.floor(per_pass) if drop_last else math.ceil(per_pass)
        if self.steps_per_pass == 0:
            raise DataError(
                f"stream '{name}': {n} samples make no full batch of {batch_size} with drop_last; "
                "lower batch_size or set drop_last to false."
            )
        self._pass = -1
        self._order: Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Stream:
        """Move the held data to ``device`` once, so that batches are slices on the device.

        ``dtype``, when given, is the floating dtype of the model's weights: floating inputs and
        targets are cast to it once here (a model in float64 or bf16 weights, "64-true" or
        "bf16-true", then reads its own dtype); integer labels keep theirs. Default None: as held.
        """
        self.x, self.y = on_device(self.x, device, dtype), on_device(self.y, device, dtype)
        self._pass, self._order = -1, None
        return self

    def _order_for(self, pass_index: int) -> Tensor:
        if pass_index != self._pass:
            if self.shuffle:
                g = torch.Generator().manual_seed(derive_seed(self.seed, "pass", pass_index))
                order = torch.randperm(self.n, generator=g)
            else:
                order = torch.arange(self.n)
            self._order, self._pass = order.to(self.x.device), pass_index
        return self._order

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """The (x, y) batch at global step ``step`` (this rank's share of it)."""
        pass_index, j = divmod(step, self.steps_per_pass)
        order = self._order_for(pass_index)
        index = order[j * self.batch_size : (j + 1) * self.batch_size]
        if self.world_size > 1:
            index = index[self.rank :: self.world_size]
        return self.x[index], self.y[index]

