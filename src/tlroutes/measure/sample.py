"""What the measurements read of data that is read lazily: a seeded subsample, in chunks.

Every measurement (the domain tests, the task comparison's source model, the transferability
scores, so ``tlroutes inspect`` and ``plan``) reads inputs as tensors, and reads at most
``max_samples`` of them per side anyway. Inputs held in memory are passed as they are; lazily
read inputs (:class:`~tlroutes.lazy_inputs.LazyInputs`: an image folder, a ``datasets`` folder)
are read here — a seeded subsample of at most ``max_samples`` positions, through the evaluation
transform (never the augmented one), :data:`CHUNK` samples at a time — so that 20,000 images at
224 px never have to fit in memory at once.

For the domain tests, images are also average-pooled to
:data:`~tlroutes.measure.domain.MAX_IMAGE_SIDE` a side per chunk (the tests pool them so anyway);
what a model reads (a source model, a candidate trunk) keeps the full resolution and is read
batch by batch from a lazy subsample (:func:`sampled_split`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Problem, Split

__all__ = ["CHUNK", "held_inputs", "held_problem", "sample_rows", "sampled_split"]

#: Samples read (and pooled) at a time.
CHUNK = 256


def sample_rows(n: int, max_samples: int, seed: int) -> Tensor:
    """At most ``max_samples`` of the positions ``0..n-1``, seeded, in increasing order (all of
    them when ``n <= max_samples``)."""
    if n <= max_samples:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:max_samples].sort().values


def sampled_split(split: Split, max_samples: int, seed: int) -> Split:
    """At most ``max_samples`` of ``split``'s samples (seeded, :func:`sample_rows`), lazily read
    inputs still lazy: for a model that reads them batch by batch (a source model, a candidate
    trunk). ``split`` itself when it is no larger."""
    if len(split) <= max_samples:
        return split
    return split.subset(sample_rows(len(split), max_samples, seed))


def held_inputs(x: Tensor | LazyInputs, rows: Tensor, *, max_side: int | None = None,
                chunk: int = CHUNK) -> Tensor:
    """The inputs ``x[rows]`` as one tensor, read :data:`CHUNK` at a time.

    Args:
        x: a tensor or lazily read inputs.
        rows: positions into ``x`` (a long tensor).
        max_side: images ``(C, H, W)`` larger than this a side are average-pooled to it, chunk by
            chunk (the domain tests); None (default) keeps the resolution.
        chunk: samples read at a time. Default :data:`CHUNK`.
    """
    if not isinstance(x, LazyInputs):
        out = x[rows]
        return _pooled(out, max_side)
    parts = [_pooled(x.load(part), max_side) for part in rows.split(chunk)]
    if not parts:
        return torch.empty((0, *x.sample_shape), dtype=x.dtype)
    return torch.cat(parts)


def _pooled(x: Tensor, max_side: int | None) -> Tensor:
    if max_side is None or x.dim() != 4 or max(x.shape[-2:]) <= max_side:
        return x
    size = (min(x.shape[-2], max_side), min(x.shape[-1], max_side))
    return torch.nn.functional.adaptive_avg_pool2d(x.float(), size)


def held_problem(problem: Problem, max_samples: int, seed: int, *,
                 max_side: int | None = None, splits: tuple[str, ...] = ("train", "val")
                 ) -> Problem:
    """``problem`` with the lazily read inputs of ``splits`` replaced by at most
    ``max_samples`` of them each (seeded), held in memory (see module doc); targets follow
    their inputs. A problem held in memory is returned as it is.

    Args:
        problem: the problem.
        max_samples: samples kept per split.
        seed: the subsample's seed (each split draws from its own generator state in order).
        max_side: as for :func:`held_inputs`. Default None.
        splits: the splits to hold. Default train and validation (what the measurements read).
    """
    if not any(problem.splits()[s].is_lazy for s in splits):
        return problem
    held: dict[str, Split] = {}
    for k, name in enumerate(splits):
        split = problem.splits()[name]
        if not split.is_lazy:
            continue
        rows = sample_rows(len(split), max_samples, seed * 3 + k)
        held[name] = Split(held_inputs(split.x, rows, max_side=max_side), split.y[rows])
    return replace(problem, **held)
