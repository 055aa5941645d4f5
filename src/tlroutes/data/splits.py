"""Seeded, stratified sampling: subsets and train / validation / test splits.

Everything here draws from a local :class:`torch.Generator` made by :func:`seeded_generator`, never
from a global random-number generator, so calling it changes no global RNG state and each purpose
(subsampling, splitting, one shift knob …) gets its own stream for a seed: adding a shift does not
change which samples land in which split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tlroutes.errors import ConfigError
from tlroutes.seeding import derive_seed


def seeded_generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded from ``seed`` and a ``purpose`` string.

    The seed is ``sha256("seed:purpose")`` cut to 31 bits, so it is stable across runs and
    machines and independent for different purposes.
    """
    return torch.Generator().manual_seed(derive_seed(seed, purpose))


def stratified_order(labels: Tensor, generator: torch.Generator) -> Tensor:
    """A random permutation of ``range(N)`` in which every prefix is stratified by ``labels``.

    Each class's members are put in random order and given keys ``(rank + u) / count`` with one
    uniform offset ``u`` per class; sorting by key interleaves the classes so that any prefix of
    length ``m`` holds each class in its overall proportion, within one sample. Taking a prefix is
    therefore a stratified subsample, and cutting the order into pieces a stratified split.

    Args:
        labels: integer class of each sample, shape ``(N,)``.
        generator: the source of randomness.

    Returns:
        A long tensor of shape ``(N,)``, a permutation of ``0..N-1``.
    """
    labels = torch.as_tensor(labels).reshape(-1)
    n = labels.shape[0]
    perm = torch.randperm(n, generator=generator)
    keys = torch.empty(n, dtype=torch.float64)
    shuffled = labels[perm]
    for cls in torch.unique(labels):
        members = perm[shuffled == cls]
        count = members.shape[0]
        offset = torch.rand(1, generator=generator, dtype=torch.float64)
        keys[members] = (torch.arange(count, dtype=torch.float64) + offset) / count
    # Sort in the random order ``perm`` so that equal keys are broken at random.
    return perm[torch.argsort(keys[perm], stable=True)]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate split fractions: three positive numbers (train, val, test) summing to 1.

    Raises:
        ConfigError: when there are not three fractions, one is not positive, or they do not sum
            to 1 (within 1e-6).
    """
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"split={fractions!r} is not a sequence of numbers; give three fractions "
            "(train, val, test), e.g. (0.6, 0.2, 0.2)."
        ) from exc
    if len(values) != 3:
        raise ConfigError(
            f"split={fractions!r} has {len(values)} fraction(s); give three (train, val, test), "
            "e.g. (0.6, 0.2, 0.2)."
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(
            f"split={fractions!r}: every fraction must be a positive number, because every split "
            "needs at least one sample."
        )
    if abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(
            f"split={fractions!r} sums to {sum(values):g}; the fractions must sum to 1."
        )
    return values  # type: ignore[return-value]


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Sizes of the train / val / test splits of ``n`` samples: rounded, each at least one.

    Train and validation sizes are ``round(fraction * n)``; test takes the rest. A split that
    rounds to zero takes one sample from the largest split.

    Raises:
        ConfigError: when ``n < 3`` (three non-empty splits are impossible).
    """
    f_train, f_val, _ = check_fractions(fractions)
    if n < 3:
        raise ConfigError(f"{n} sample(s) cannot fill three non-empty splits; keep at least 3.")
    sizes = [round(f_train * n), round(f_val * n)]
    sizes.append(n - sum(sizes))
    for i in range(3):
        while sizes[i] < 1:
            sizes[max(range(3), key=lambda j: sizes[j])] -= 1
            sizes[i] += 1
    return sizes[0], sizes[1], sizes[2]


def split_indices(
    labels: Tensor, fractions: Sequence[float], generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Stratified train / val / test index sets (disjoint, covering ``0..N-1``).

    Args:
        labels: integer class of each sample, shape ``(N,)``; stratification keeps each class's
            share in every split within about one sample of its overall share.
        fractions: ``(train, val, test)`` fractions, positive and summing to 1.
        generator: the source of randomness; the same generator state gives the same split.

    Returns:
        Three long tensors of positions, in random order.
    """
    order = stratified_order(labels, generator)
    n_train, n_val, _ = split_sizes(order.shape[0], fractions)
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
