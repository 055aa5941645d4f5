"""Inputs read on demand: the ``x`` of a :class:`~tlroutes.problem.Split` that is not held whole.

A :class:`LazyInputs` stands where a split's ``(N, *sample_shape)`` input tensor would: it has a
``shape``, a ``dtype`` and a length, and indexing it (``x[i]``, ``x[a:b]``, ``x[index]``) reads
those samples from their source and returns a stacked tensor. Code that slices inputs therefore
works on data of any size; code that needs every input at once asks :meth:`materialize`.

A *reader* is anything with ``len(reader)`` and ``reader.read(i)``, returning sample ``i`` raw (a
PIL image, a row of a table, token ids). The *transform* turns a raw sample into a tensor of
``sample_shape`` (for images: decode, resize, normalise). The *train transform*, when given, is
the augmented variant used for training batches: it is called under a seed derived from
``(augment_seed, position in batch)``, so the batch at step *i* is a function of the run's seed
and *i* alone — in the main process or in any data-loader worker — and resuming is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from tlroutes.seeding import derive_seed


class SampleReader(Protocol):
    """A map-style source of raw samples: ``len(reader)`` and ``reader.read(i)``."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> Any: ...


def _to_tensor(sample: Any) -> Tensor:
    return sample if isinstance(sample, Tensor) else torch.as_tensor(sample)


class LazyInputs:
    """The inputs of a split, read sample by sample from ``reader`` when indexed.

    Args:
        reader: the raw samples (see :class:`SampleReader`).
        sample_shape: the shape of one transformed sample, e.g. ``(3, 224, 224)``.
        dtype: the dtype of one transformed sample. Default ``torch.float32``.
        transform: raw sample → tensor of ``sample_shape``, deterministic (evaluation and
            measurement read through it). Default None: ``torch.as_tensor``.
        train_transform: the augmented variant for training batches; None (default) uses
            ``transform``.
        index: positions in ``reader`` that this object exposes, in order (a subset); None
            (default) exposes every sample.
    """

    def __init__(
        self,
        reader: SampleReader,
        *,
        sample_shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        transform: Callable[[Any], Tensor] | None = None,
        train_transform: Callable[[Any], Tensor] | None = None,
        index: Tensor | None = None,
    ) -> None:
        self.reader = reader
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.dtype = dtype
        self.transform = transform or _to_tensor
        self.train_transform = train_transform
        self.index = index if index is None else torch.as_tensor(index, dtype=torch.long)

    # -- what a tensor of shape (N, *sample_shape) would answer -------------------------------
    def __len__(self) -> int:
        return len(self.reader) if self.index is None else int(self.index.numel())

    @property
    def shape(self) -> torch.Size:
        """``(N, *sample_shape)``."""
        return torch.Size((len(self), *self.sample_shape))

    @property
    def device(self) -> torch.device:
        """Samples are read onto the CPU; the caller moves each batch."""
        return torch.device("cpu")

    @property
    def ndim(self) -> int:
        """``1 + len(sample_shape)``."""
        return 1 + len(self.sample_shape)

    def dim(self) -> int:
        """As :attr:`ndim`."""
        return self.ndim

    def is_floating_point(self) -> bool:
        """Whether transformed samples are floating point."""
        return self.dtype.is_floating_point

    def _positions(self, key: int | slice | Sequence[int] | Tensor) -> list[int]:
        n = len(self)
        if isinstance(key, slice):
            rows = list(range(n))[key]
        elif isinstance(key, Tensor) and key.dtype == torch.bool:
            rows = key.nonzero().flatten().tolist()
        else:
            rows = torch.as_tensor(key, dtype=torch.long).flatten().tolist()
        rows = [r + n if r < 0 else r for r in rows]
        if any(r < 0 or r >= n for r in rows):
            raise IndexError(f"index out of range for {n} lazily read samples")
        if self.index is None:
            return rows
        return self.index[rows].tolist()

    def __getitem__(self, key: int | slice | Sequence[int] | Tensor) -> Tensor:
        if isinstance(key, int):
            return self.load_rows(self._positions(key))[0]
        return self.load_rows(self._positions(key))

    # -- reading --------------------------------------------------------------------------------
    def load_rows(self, rows: Sequence[int], *, augment_seed: int | None = None,
                  slots: Sequence[int] | None = None) -> Tensor:
        """The samples at reader positions ``rows``, stacked to ``(len(rows), *sample_shape)``.

        ``augment_seed`` None (default) reads through ``transform``; otherwise through
        ``train_transform`` with sample ``k`` of the batch under seed
        ``derive_seed(augment_seed, slots[k])`` (the global RNG is restored afterwards).
        ``slots`` None (default) is ``0, 1, …``; a data-parallel rank reading its share of a
        global batch passes the global positions, so each sample is augmented as one process
        would augment it.
        """
        if augment_seed is None or self.train_transform is None:
            out = [self.transform(self.reader.read(r)) for r in rows]
        else:
            out = []
            slots = range(len(rows)) if slots is None else slots
            for k, r in zip(slots, rows, strict=True):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(derive_seed(augment_seed, k))
                    out.append(self.train_transform(self.reader.read(r)))
        if not out:
            return torch.empty((0, *self.sample_shape), dtype=self.dtype)
        return torch.stack(out).to(self.dtype)

    def load(self, positions: Sequence[int] | Tensor, *, augment_seed: int | None = None,
             slots: Sequence[int] | None = None) -> Tensor:
        """The samples at ``positions`` of this object (not of the reader); see
        :meth:`load_rows`."""
        return self.load_rows(self._positions(positions), augment_seed=augment_seed, slots=slots)

    def subset(self, positions: Tensor) -> LazyInputs:
        """A view of the samples at ``positions`` (a long tensor), still read lazily."""
        rows = torch.as_tensor(self._positions(positions), dtype=torch.long)
        return LazyInputs(self.reader, sample_shape=self.sample_shape, dtype=self.dtype,
                          transform=self.transform, train_transform=self.train_transform,
                          index=rows)

    def materialize(self) -> Tensor:
        """Every sample, read now and held: ``(N, *sample_shape)``."""
        return self.load_rows(self._positions(slice(None)))

    def __repr__(self) -> str:
        return (f"LazyInputs(n={len(self)}, sample_shape={self.sample_shape}, "
                f"reader={type(self.reader).__name__})")
