"""Frozen-trunk features computed once and reused while the trunk stays frozen.

The features of every sample are computed in one pass, batch by batch (lazily read inputs too,
through the run's data-loading workers). When they fit in memory (:data:`FEATURE_MEMORY_BYTES`,
at most a quarter of what the machine has available) they are held as a tensor on the model's
device; otherwise they are written to a float32 file in the run folder and read back as a
:class:`~tlroutes.lazy_inputs.LazyInputs` whose reader is a memory map of that file, so that a
head trains on features of any number of samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor, nn

from tlroutes.config import machine_memory
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Split
from tlroutes.runfolder import atomic_write
from tlroutes.train.engine import evaluate_split, iter_outputs

#: Features held in memory at most, in bytes (1 GiB; a quarter of the available memory when
#: that is less). Larger caches go to disk.
FEATURE_MEMORY_BYTES = 1 << 30


class MemmapReader:
    """Rows of a float32 ``(n, dim)`` file, read through a memory map (a
    :class:`~tlroutes.lazy_inputs.SampleReader`). The map is opened in each process that reads,
    so data-loading workers can be started by fork or spawn."""

    def __init__(self, path: str | Path, n: int, dim: int) -> None:
        self.path, self.n, self.dim = Path(path), n, dim
        self._map: np.memmap | None = None

    def __len__(self) -> int:
        return self.n

    def read(self, i: int) -> Tensor:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.n, self.dim))
        return torch.from_numpy(np.array(self._map[i]))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}


def cache_features(
    model: nn.Module, split: Split, stem: str | None = None, batch_size: int | None = None, *,
    folder: str | Path | None = None, name: str = "features",
    memory_bytes: int | None = None,
) -> Split:
    """The trunk features of every sample of ``split`` (in eval mode, without gradients).

    Args:
        model: a :class:`~tlroutes.model.TransferModel` whose stem and trunk are frozen.
        split: the inputs (a tensor or lazily read) and targets.
        stem: the stem to read inputs with; None when the model has one.
        batch_size: samples per forward pass; None (default) sizes it to memory (see
            :func:`tlroutes.train.loading.eval_batch_size`).
        folder: where features that do not fit in memory are stored (``<folder>/<name>.f32``,
            float32, row-major); None (default) always holds them in memory.
        name: the file's name within ``folder``. Default ``"features"``.
        memory_bytes: the most bytes of features held in memory; None (default)
            ``min(FEATURE_MEMORY_BYTES, available memory / 4)``.

    Returns:
        A :class:`Split` of features ``(N, trunk.out_dim)`` and the same targets: on the model's
        device when held in memory, else a :class:`~tlroutes.lazy_inputs.LazyInputs` over the
        file (targets on the CPU).
    """
    def forward(x: Tensor) -> Tensor:
        return model.features(x, stem)

    dim = int(model.trunk.out_dim)
    budget = memory_bytes if memory_bytes is not None else min(FEATURE_MEMORY_BYTES,
                                                               machine_memory() // 4)
    if folder is None or len(split) * dim * 4 <= budget:
        features = evaluate_split(model, forward, split.x, batch_size)
        return Split(features, split.y.to(features.device))
    path = Path(folder) / f"{name}.f32"
    atomic_write(path, lambda f: _write_features(model, forward, split.x, batch_size, f))
    reader = MemmapReader(path, len(split), dim)
    return Split(LazyInputs(reader, sample_shape=(dim,), dtype=torch.float32), split.y)


def _write_features(model: nn.Module, forward, x, batch_size: int | None, f: IO[bytes]) -> None:
    for out in iter_outputs(model, forward, x, batch_size):
        f.write(out.float().cpu().contiguous().numpy().tobytes())
