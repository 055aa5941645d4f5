"""Reading lazily held data: worker processes, prefetching, and how large an evaluation batch is.

In-memory splits never come here: their batches are slices of tensors already on the device.
A split whose inputs are a :class:`~tlroutes.lazy_inputs.LazyInputs` is read through a
:class:`torch.utils.data.DataLoader` instead, in two shapes:

- training: a *step-indexed* dataset (:class:`StepBatches`): item ``i`` is the whole batch of
  global step ``i``, so a loader can start at any step (resuming needs no sampler state) and
  worker processes produce exactly what the main process would;
- evaluation: a *batch-indexed* dataset (:class:`SliceBatches`) over consecutive slices.

The run's settings (:class:`DataLoading`: workers, evaluation batch size, pinned memory) are set
once per run by the :class:`~tlroutes.train.engine.Trainer` from ``hardware:`` and read here by
the streams and by :func:`~tlroutes.train.engine.evaluate_split`, which routes call directly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from tlroutes.config import machine_cores, machine_memory
from tlroutes.lazy_inputs import LazyInputs

#: Batches each worker keeps ready ahead of the training loop (DataLoader's ``prefetch_factor``).
PREFETCH_FACTOR = 2
#: The largest evaluation batch the memory rule gives: beyond ~1k samples a forward pass is no
#: faster per sample on a CPU, and this keeps the outputs of small-sample data (digits) exactly
#: what the former fixed batch of 1,024 gave.
MAX_EVAL_BATCH = 1024
#: The input bytes of one evaluation batch, at most (64 MiB; less on a machine with under 2 GiB
#: available: 1/32 of what is available). A network's activations are a few times its input, so
#: this keeps an evaluation pass to a few hundred MiB at the most.
EVAL_BATCH_BYTES = 64 << 20


def default_workers() -> int:
    """Data-loading worker processes when ``hardware.workers`` is not given.

    ``min(4, cores - 1)``: one core stays with the training process. On a 1-core machine that is
    0 (reading happens in the training process); on 2 cores it is 1, which
    ``benchmarks/data_pipeline.py`` measured faster than 0 for decoded images (the decoding then
    overlaps the training step).
    """
    return max(0, min(4, machine_cores() - 1))


def eval_batch_size(sample_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """The evaluation batch "sized to memory": ``EVAL_BATCH_BYTES`` of inputs, at most.

    ``max(1, min(MAX_EVAL_BATCH, budget // bytes per sample))`` where the budget is
    ``min(EVAL_BATCH_BYTES, available memory / 32)``. A 3×224×224 float32 image (602 KB) gives
    111; 8×8 digits give 1,024.
    """
    per_sample = max(1, math.prod(sample_shape)) * torch.empty((), dtype=dtype).element_size()
    budget = min(EVAL_BATCH_BYTES, machine_memory() // 32)
    return max(1, min(MAX_EVAL_BATCH, budget // per_sample))


@dataclass
class DataLoading:
    """How a run reads lazily held data (see :class:`~tlroutes.config.HardwareSpec`).

    Args:
        workers: data-loading worker processes; 0 reads in the training process. Default:
            :func:`default_workers`.
        eval_batch_size: samples per evaluation forward pass; None (default) sizes it to memory
            (:func:`eval_batch_size`).
        pin_memory: pin batches in page-locked memory for a fast copy to a GPU. Default False
            (the Trainer sets it when training on CUDA).
    """

    workers: int = -1
    eval_batch_size: int | None = None
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.workers < 0:
            self.workers = default_workers()


_CURRENT = DataLoading()


def data_loading() -> DataLoading:
    """The settings in force (the last Trainer's, else the defaults)."""
    return _CURRENT


def set_data_loading(settings: DataLoading) -> None:
    """Put ``settings`` in force for the streams and evaluations that follow."""
    global _CURRENT
    _CURRENT = settings


class StepsFrom(Sampler[int]):
    """Global steps ``start, start + 1, …`` without end (the loader is left when a stage ends)."""

    def __init__(self, start: int = 0) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


class StepBatches(Dataset):
    """Item ``step`` = this rank's ``(x, y)`` batch of global step ``step``, read on the CPU.

    Args:
        x: the lazily read inputs.
        y: the targets, held in memory (sliced here, so they travel with the batch).
        index: ``step → (positions, slots)``: this rank's sample positions and their places in
            the global batch (the stream's order function).
        augment_seed: ``step → seed`` of the train transform for that step's batch; None reads
            through the evaluation transform.
    """

    def __init__(self, x: LazyInputs, y: Tensor,
                 index: Callable[[int], tuple[Tensor, list[int]]],
                 augment_seed: Callable[[int], int] | None) -> None:
        self.x, self.y, self.index, self.augment_seed = x, y, index, augment_seed

    def __getitem__(self, step: int) -> tuple[Tensor, Tensor]:
        positions, slots = self.index(step)
        seed = None if self.augment_seed is None else self.augment_seed(step)
        return self.x.load(positions, augment_seed=seed, slots=slots), self.y[positions]


class SliceBatches(Dataset):
    """Item ``i`` = ``x[i * batch_size : (i + 1) * batch_size]`` (evaluation order)."""

    def __init__(self, x: LazyInputs, batch_size: int) -> None:
        self.x, self.batch_size = x, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i * self.batch_size:(i + 1) * self.batch_size]


def loader(dataset: Dataset, *, sampler: Sampler[int] | None = None, workers: int,
           pin_memory: bool, persistent: bool) -> DataLoader:
    """A DataLoader that hands over ``dataset``'s items as they are (each item is a batch).

    It draws its workers' seeds from a generator of its own, so that starting one never moves
    the global random stream the training reads (dropout, initialisation): a run with workers
    trains exactly as one without.
    """
    # Forked workers drop the run lock they inherit at fork time (a hook that
    # tlroutes.runfolder.lock registers when a lock is taken), so killing the run frees its
    # folder at once.
    extra = {"prefetch_factor": PREFETCH_FACTOR,
             "persistent_workers": persistent} if workers else {}
    return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0), **extra)


def eval_batches(x: Tensor | LazyInputs, batch_size: int | None = None,
                 workers: int | None = None) -> Iterator[Tensor]:
    """``x`` in consecutive batches: slices of a tensor, or lazily read batches (through
    ``workers`` processes; None: the settings in force) of a :class:`LazyInputs`.

    ``batch_size`` None sizes the batch to memory (:func:`eval_batch_size`), unless the run's
    settings give one.
    """
    settings = data_loading()
    size = batch_size or settings.eval_batch_size or eval_batch_size(
        tuple(x.shape[1:]), x.dtype)
    if not isinstance(x, LazyInputs):
        for i in range(0, len(x), size):
            yield x[i:i + size]
        return
    workers = settings.workers if workers is None else workers
    if workers == 0:
        for i in range(0, len(x), size):
            yield x[i:i + size]
        return
    batches = SliceBatches(x, size)
    it = iter(loader(batches, workers=min(workers, len(batches)),
                     pin_memory=settings.pin_memory, persistent=False))
    try:
        yield from it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
