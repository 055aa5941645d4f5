"""Streams: the training batches of one split, step by step.

A :class:`Stream` is stateless: the batch at global step ``i`` is a pure function of the seed and
``i``. That makes resuming exact (no sampler state to save), lets a short stream cycle while a
long one sets the epoch length, and lets data-parallel ranks take disjoint slices of the same
global batch — so two processes see exactly what one process would.

Two paths, chosen by the split and said in the log (:meth:`Stream.describe`):

- **in memory** (a tensor ``x``): the data moves to the device once and a batch is a slice of
  it, with no DataLoader in the way;
- **lazy** (a :class:`~tlroutes.lazy_inputs.LazyInputs` ``x``): a DataLoader over a
  step-indexed dataset (:class:`~tlroutes.train.loading.StepBatches`) reads each step's batch
  in worker processes, ahead of the loop, with the train transform seeded by
  ``(seed, step, position in the global batch)``; only the batch goes to the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tlroutes import checks
from tlroutes.errors import DataError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Split, on_device
from tlroutes.train.loading import StepBatches, StepsFrom, data_loading, loader
from tlroutes.train.seeding import derive_seed


def pass_order(n: int, pass_index: int, *, shuffle: bool, seed: int) -> Tensor:
    """The sample order of pass ``pass_index`` over ``n`` samples (on the CPU): a permutation
    seeded by ``derive_seed(seed, "pass", pass_index)``, or ``0..n-1`` without shuffling."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(derive_seed(seed, "pass", pass_index))
    return torch.randperm(n, generator=g)


@dataclass
class StepOrder:
    """A stream's order function on the CPU: which samples each global step reads (the same
    arithmetic as :meth:`Stream.batch`, for the data-loading workers of a lazy stream)."""

    n: int
    batch_size: int
    steps_per_pass: int
    shuffle: bool
    seed: int
    rank: int
    world_size: int
    _pass: int = -1
    _order: Tensor | None = None

    def positions(self, step: int) -> tuple[Tensor, list[int]]:
        """This rank's sample positions at global step ``step`` and their places in the global
        batch (the slots each sample's augmentation is seeded by)."""
        pass_index, j = divmod(step, self.steps_per_pass)
        if pass_index != self._pass:
            self._order = pass_order(self.n, pass_index, shuffle=self.shuffle, seed=self.seed)
            self._pass = pass_index
        index = self._order[j * self.batch_size : (j + 1) * self.batch_size]
        slots = range(len(index))[self.rank :: self.world_size]
        return index[self.rank :: self.world_size], list(slots)

    def augment_seed(self, step: int) -> int:
        """The seed of step ``step``'s train transform."""
        return derive_seed(self.seed, "augment", step)


class Stream:
    """Shuffled mini-batches from one :class:`~tlroutes.problem.Split`.

    Args:
        split: the data: in memory, or with lazily read inputs (then read through a
            DataLoader, see the module doc).
        batch_size: samples per *global* batch (summed over data-parallel ranks). Default 64.
        shuffle: reshuffle every pass through the data. Default True.
        drop_last: drop a final short batch. Default False.
        seed: seeds the shuffles; pass pass ``i`` uses ``derive_seed(seed, "pass", i)``.
        rank, world_size: this process's share of each global batch is the slice
            ``rank::world_size``. Default 0 and 1 (a single process).
        name: used in error messages.
        augment: lazy inputs only: read training batches through the split's train transform
            (seeded per step and sample). Default True.
        workers: lazy inputs only: data-loading worker processes; None (default) takes the
            run's setting (``hardware.workers``, see :mod:`tlroutes.train.loading`).
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
        augment: bool = True,
        workers: int | None = None,
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
        self.lazy = isinstance(self.x, LazyInputs)
        self.augment, self.workers = augment, workers
        self._device: torch.device | str = "cpu"
        self._dtype: torch.dtype | None = None
        self._pin = False
        self._loader = self._iter = None
        self._next = -1

    def describe(self) -> str:
        """Which path this stream reads by, for the log."""
        if not self.lazy:
            return f"stream '{self.name}': {self.n} samples in memory, batches sliced on the device"
        workers = self._workers()
        how = f"{workers} worker process(es)" if workers else "the training process"
        return (f"stream '{self.name}': {self.n} samples read lazily through a DataLoader "
                f"({how}), one batch at a time to the device")

    def _workers(self) -> int:
        return data_loading().workers if self.workers is None else self.workers

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Stream:
        """Move the held data to ``device`` once, so that batches are slices on the device.

        ``dtype``, when given, is the floating dtype of the model's weights: floating inputs and
        targets are cast to it once here (a model in float64 or bf16 weights, "64-true" or
        "bf16-true", then reads its own dtype); integer labels keep theirs. Default None: as held.
        """
        if self.lazy:
            # The data stays where it is read; each batch is moved on its own (in batch()).
            self._device, self._dtype = device, dtype
            self._pin = torch.device(device).type == "cuda" and data_loading().pin_memory
            return self
        self.x, self.y = on_device(self.x, device, dtype), on_device(self.y, device, dtype)
        self._pass, self._order = -1, None
        return self

    def close(self) -> None:
        """Stop this stream's data-loading workers (the engine calls it when a stage ends)."""
        shutdown = getattr(self._iter, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._loader = self._iter = None
        self._next = -1

    def _order_for(self, pass_index: int) -> Tensor:
        if pass_index != self._pass:
            order = pass_order(self.n, pass_index, shuffle=self.shuffle, seed=self.seed)
            self._order, self._pass = order.to(self.x.device), pass_index
        return self._order

    def _index(self, step: int) -> Tensor:
        pass_index, j = divmod(step, self.steps_per_pass)
        order = self._order_for(pass_index)
        index = order[j * self.batch_size : (j + 1) * self.batch_size]
        if self.world_size > 1:
            index = index[self.rank :: self.world_size]
        return index

    def _dataset(self) -> StepBatches:
        # A picklable snapshot of the order function (worker processes may be spawned).
        order = StepOrder(n=self.n, batch_size=self.batch_size,
                          steps_per_pass=self.steps_per_pass, shuffle=self.shuffle,
                          seed=self.seed, rank=self.rank, world_size=self.world_size)
        return StepBatches(self.x, self.y, order.positions,
                           order.augment_seed if self.augment else None)

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """The (x, y) batch at global step ``step`` (this rank's share of it)."""
        if self.lazy:
            return self._lazy_batch(step)
        index = self._index(step)
        return self.x[index], self.y[index]

    def _lazy_batch(self, step: int) -> tuple[Tensor, Tensor]:
        workers = self._workers()
        if workers == 0:
            x, y = self._dataset()[step]
        else:
            # Served from the prefetching iterator when asked for the next step (training);
            # any other step (a resume, a second stage) restarts the iterator there.
            if self._iter is None or step != self._next:
                self._restart(step, workers)
            x, y = next(self._iter)
            self._next = step + 1
        return (on_device(x.to(self._device, non_blocking=self._pin), self._device, self._dtype),
                on_device(y.to(self._device, non_blocking=self._pin), self._device, self._dtype))

    def _restart(self, step: int, workers: int) -> None:
        if self._loader is None:
            self._sampler = StepsFrom(step)
            self._loader = loader(self._dataset(), sampler=self._sampler, workers=workers,
                                  pin_memory=self._pin, persistent=True)
        self._sampler.start = step
        self._iter = iter(self._loader)

