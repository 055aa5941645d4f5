"""Mixing several datasets into one training stream: mixing policies and :class:`MixedStream`.

Dataset Merging trains one model on several datasets of the same task and domain at once. How
often each dataset is drawn is the *mixing policy*; given dataset sizes ``n_1 … n_D``:

- ``proportional``: ``p_i = n_i / Σ n`` — every sample equally likely, big datasets dominate;
- ``balanced``: ``p_i = 1 / D`` — every dataset equally likely, small ones are repeated often;
- ``temperature``: ``p_i ∝ n_i ** (1 / T)`` — ``T = 1`` is proportional, ``T → ∞`` balanced, and
  values in between (mT5 uses ``T ≈ 3.3``) up-weight small datasets without flattening the mix.

Any policy takes a ``cap``: no ``p_i`` may exceed it. Excess mass is taken from the capped
datasets and shared among the others in proportion to their own probabilities; when that lifts
another dataset over the cap it is capped too, and so on until no probability exceeds the cap
(at most ``D`` rounds). A cap below ``1 / D`` cannot be met and is an error.

:class:`MixedStream` draws batches from such a mixture with the interface of
:class:`tlroutes.train.streams.Stream`, statelessly: the batch at a global step is a pure function
of ``(seed, step)``, so a resumed run sees exactly the batches it would have seen.

Example::

    p = mixing_probabilities([5000, 500, 50], "temperature", temperature=3.0, cap=0.6)
    stream = MixedStream({"web": a.train, "lab": b.train}, batch_size=64, policy="balanced")
    x, y = stream.batch(step)          # like Stream.batch
    source = stream.sources(step)      # which dataset each sample of that batch came from
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from tlroutes import checks
from tlroutes.config import check_memory
from tlroutes.errors import ConfigError, DataError, did_you_mean
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Problem, Split, on_device
from tlroutes.seeding import derive_seed

#: The mixing policies :func:`mixing_probabilities` knows, with a one-line description.
MIXING_POLICIES: dict[str, str] = {
    "proportional": "p_i = n_i / sum(n): every sample equally likely",
    "balanced": "p_i = 1 / D: every dataset equally likely",
    "temperature": "p_i proportional to n_i ** (1 / T): T = 1 proportional, T -> inf balanced",
}


def mixing_probabilities(
    sizes: Sequence[int],
    policy: str = "proportional",
    temperature: float | None = None,
    cap: float | None = None,
) -> list[float]:
    """The probability of drawing from each dataset under a mixing policy.

    Args:
        sizes: the number of samples ``n_i`` of each dataset; each at least 1.
        policy: ``"proportional"`` (default), ``"balanced"`` or ``"temperature"`` (see
            :data:`MIXING_POLICIES` and the module doc).
        temperature: ``T > 0`` for the ``"temperature"`` policy (required there, and only
            allowed there); ``float("inf")`` gives the balanced mix.
        cap: the largest probability any dataset may get, in ``[1 / D, 1]``; excess mass is
            redistributed to the other datasets in proportion to their probabilities, repeated
            until consistent (module doc). Default None: no cap.

    Returns:
        ``D`` probabilities, in the order of ``sizes``, summing to 1.

    Raises:
        ConfigError: unknown policy, a missing or invalid temperature, an unreachable cap.
        DataError: no sizes, or a size below 1.
    """
    sizes = list(sizes)
    if not sizes:
        raise DataError("mixing_probabilities needs the size of at least one dataset.")
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, int | float) or n < 1 or n != int(n):
            raise DataError(
                f"dataset {i} has size {n!r}; every dataset to mix needs a whole number of "
                "samples, at least 1. Drop empty datasets before mixing."
            )
    if policy not in MIXING_POLICIES:
        raise ConfigError(
            f"mixing policy '{policy}' is unknown; use one of {', '.join(MIXING_POLICIES)}."
            + did_you_mean(policy, MIXING_POLICIES)
        )
    if policy == "temperature":
        if temperature is None:
            raise ConfigError(
                "the 'temperature' mixing policy needs a temperature T > 0 "
                "(1 = proportional, larger values move towards balanced)."
            )
        if isinstance(temperature, bool) or not float(temperature) > 0:
            raise ConfigError(f"temperature must be a number above 0, got {temperature!r}.")
    elif temperature is not None:
        raise ConfigError(
            f"temperature={temperature!r} is only used by the 'temperature' policy, not "
            f"'{policy}'; drop it or set policy='temperature'."
        )

    d = len(sizes)
    n = [float(s) for s in sizes]
    if policy == "balanced" or (policy == "temperature" and math.isinf(temperature)):
        weights = [1.0] * d
    elif policy == "proportional":
        weights = n
    else:
        # n ** (1/T) computed relative to the largest size, so that it cannot overflow.
        top = max(n)
        weights = [math.exp(math.log(s / top) / float(temperature)) for s in n]
    total = sum(weights)
    p = [w / total for w in weights]
    return _apply_cap(p, cap) if cap is not None else p


def _apply_cap(p: list[float], cap: float) -> list[float]:
    """Cap every probability at ``cap``, sharing the excess proportionally (module doc)."""
    d = len(p)
    if isinstance(cap, bool) or not isinstance(cap, int | float) or math.isnan(cap) or cap <= 0:
        raise ConfigError(f"cap must be a number in [1/D, 1], got {cap!r}.")
    if cap * d < 1 - 1e-12:
        raise ConfigError(
            f"cap {cap} cannot be met by {d} dataset(s): their probabilities sum to 1, so at "
            f"least one is at or above 1/{d} = {1 / d:.4g}. Raise the cap to at least that."
        )
    capped: set[int] = set()
    while True:
        free = [i for i in range(d) if i not in capped]
        mass = 1.0 - cap * len(capped)
        free_total = sum(p[i] for i in free)
        q = [cap] * d
        for i in free:
            q[i] = mass * p[i] / free_total if free_total > 0 else mass / len(free)
        over = [i for i in free if q[i] > cap * (1 + 1e-12)]
        if not over:
            return q
        capped.update(over)
        if len(capped) == d:  # only when cap == 1/D exactly: everything capped
            return [1.0 / d] * d


class MixedStream:
    """Mini-batches mixed from several datasets, each sample from dataset ``i`` w.p. ``p_i``.

    A drop-in for :class:`tlroutes.train.streams.Stream`: it has ``steps_per_pass``,
    ``batch(step)``, ``to(device)`` and the ``rank`` / ``world_size`` attributes, and the engine
    can hold it in a stage's ``streams`` like any other stream.

    **How a batch is drawn.** For global step ``s``, a CPU generator seeded with
    ``derive_seed(seed, "mixed", s)`` draws, for each of the ``batch_size`` samples of the global
    batch, its source dataset ``i`` (categorical with probabilities ``p``) and then a sample of
    that dataset uniformly at random (so *within* a dataset, sampling is with replacement, as in
    ``WeightedRandomSampler(replacement=True)``). Nothing depends on earlier steps, so resume is
    exact and any step can be replayed. With ``world_size > 1`` every rank draws the same global
    batch and keeps the slice ``rank::world_size``, as :class:`Stream` does.

    **Sources.** Every sample keeps the index of the dataset it came from (the position in
    ``splits``; names in :attr:`source_names`):

    - ``batch(step)`` returns ``(x, y)`` — the contract every training step understands;
    - ``sources(step)`` returns the long tensor ``(B,)`` of source indices of exactly that batch
      (same rank slice, same device), without drawing again when called after ``batch(step)``;
    - with ``return_sources=True``, ``batch(step)`` returns ``(x, y, source)`` instead, which is
      what a custom training step inside the engine receives, e.g. to log a loss per source::

          x, y, source = batch["train"]
          losses = F.cross_entropy(model(x), y, reduction="none")
          per_source = torch.zeros(D).index_add(0, source, losses) / source.bincount(minlength=D)

    Args:
        splits: the datasets to mix, as ``{name: Split}`` or a sequence of splits (named
            ``"0"``, ``"1"``, …). Every split needs the same per-sample input shape and dtype
            and the same target shape and dtype; for classification, harmonise their labels
            first (:meth:`tlroutes.data.merging.LabelMap.apply`).
        batch_size: samples per *global* batch (summed over data-parallel ranks). Default 64.
        probabilities: ``p`` given directly (non-negative, summing to 1 within 1e-6).
            Default None: computed with ``policy``.
        policy, temperature, cap: passed to :func:`mixing_probabilities` with the split sizes
            when ``probabilities`` is None. Default policy ``"proportional"``.
        seed: seeds every batch (see above). Default 0.
        rank, world_size: this process's share of each global batch is ``rank::world_size``.
            Default 0 and 1.
        steps_per_pass: the steps that count as one pass (epoch). Default None:
            ``ceil(Σ n_i / batch_size)``, one pass's worth of samples.
        return_sources: make ``batch`` return ``(x, y, source)``. Default False.
        name: used in error messages.
    """

    def __init__(
        self,
        splits: Mapping[str, Split] | Sequence[Split],
        batch_size: int = 64,
        *,
        probabilities: Sequence[float] | None = None,
        policy: str | None = None,
        temperature: float | None = None,
        cap: float | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_per_pass: int | None = None,
        return_sources: bool = False,
        name: str = "train",
    ) -> None:
        if isinstance(splits, Mapping):
            names, parts = [str(k) for k in splits], list(splits.values())
        else:
            parts = list(splits)
            names = [str(i) for i in range(len(parts))]
        if not parts:
            raise DataError(f"mixed stream '{name}' needs at least one split to draw from.")
        sizes = [len(s) for s in parts]
        for source, n in zip(names, sizes, strict=True):
            if n == 0:
                raise DataError(
                    f"mixed stream '{name}': source '{source}' has no samples; drop it."
                )
        _check_compatible(parts, names, name)
        checks.batch_size(name, batch_size, world_size)
        # Drawn with replacement, a batch may be far larger than the data; it must still fit.
        per_sample = 16 + max(math.prod(s.x.shape[1:]) * _itemsize(s.x.dtype)
                              + s.y[0].numel() * s.y.element_size() for s in parts)
        check_memory(f"batch_size: {batch_size}", batch_size * per_sample,
                     f"{per_sample} bytes per sample: input, label, index and draw",
                     "lower batch_size")
        if probabilities is not None:
            if policy is not None or temperature is not None or cap is not None:
                raise ConfigError(
                    f"stream '{name}': give either probabilities or a policy "
                    "(with temperature / cap), not both."
                )
            p = [float(v) for v in probabilities]
            if len(p) != len(parts):
                raise ConfigError(
                    f"stream '{name}': {len(p)} probabilities for {len(parts)} sources."
                )
            if any(not v >= 0 for v in p) or abs(sum(p) - 1) > 1e-6:
                raise ConfigError(
                    f"stream '{name}': probabilities must be non-negative and sum to 1, got {p}."
                )
        else:
            p = mixing_probabilities(sizes, policy or "proportional", temperature, cap)
        if steps_per_pass is None:
            steps_per_pass = math.ceil(sum(sizes) / batch_size)
        if steps_per_pass < 1:
            raise DataError(f"stream '{name}': steps_per_pass must be at least 1.")

        self.name, self.seed, self.batch_size = name, seed, batch_size
        self.rank, self.world_size = rank, world_size
        self.steps_per_pass = int(steps_per_pass)
        self.return_sources = return_sources
        self.source_names: tuple[str, ...] = tuple(names)
        self.sizes: tuple[int, ...] = tuple(sizes)
        self.probabilities: tuple[float, ...] = tuple(p)
        # Lazy sources (data read on demand) stay apart and are read per batch; in-memory ones
        # are concatenated once so that a batch is one gather.
        self._lazy = [s.x for s in parts] if any(s.is_lazy for s in parts) else None
        self._dtype: torch.dtype | None = None
        if self._lazy is None:
            self.x = torch.cat([s.x for s in parts]) if len(parts) > 1 else parts[0].x
        else:
            self.x = None
        self.y = torch.cat([s.y for s in parts]) if len(parts) > 1 else parts[0].y
        self._p = torch.tensor(p, dtype=torch.float64)
        self._n = torch.tensor(sizes, dtype=torch.float64)
        self._offsets = torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0)
        self._last: tuple[int, int, int, Tensor, Tensor] | None = None

    @classmethod
    def from_problems(
        cls, problems: Mapping[str, Problem], batch_size: int = 64, split: str = "train", **kwargs
    ) -> MixedStream:
        """A mixed stream over one split (default ``"train"``) of several problems.

        The problems must share one task (equal :class:`~tlroutes.problem.Task`, e.g. after
        :meth:`~tlroutes.data.merging.LabelMap.apply`) and one input shape; sources are named
        after the keys of ``problems``. Other arguments as for the constructor.
        """
        problems = dict(problems)
        if not problems:
            raise DataError("MixedStream.from_problems needs at least one problem.")
        first_name, first = next(iter(problems.items()))
        for key, problem in problems.items():
            if problem.task != first.task:
                raise DataError(
                    f"problems '{first_name}' and '{key}' have different tasks "
                    f"({first.task} vs {problem.task}); datasets merged into one stream need "
                    "one task. Harmonise their labels with tlroutes.data.merging.LabelMap."
                )
        if split not in ("train", "val", "test"):
            raise ConfigError(f"split '{split}' is unknown; use train, val or test.")
        splits = {key: getattr(problem, split) for key, problem in problems.items()}
        return cls(splits, batch_size, **kwargs)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> MixedStream:
        """Move the held data to ``device`` once, so that batches are gathers on the device.

        ``dtype``: the weights' floating dtype, to cast floating data to (see
        :func:`tlroutes.problem.on_device`). Default None: as held.
        """
        if self._lazy is None:
            self.x = on_device(self.x, device, dtype)
        self.y = on_device(self.y, device, dtype)
        self._dtype, self._last = dtype, None
        return self

    def describe(self) -> str:
        """Which path this stream reads by, for the log."""
        how = ("read lazily from their sources, batch by batch" if self._lazy is not None
               else "in memory, batches gathered on the device")
        return (f"stream '{self.name}': {sum(self.sizes)} samples mixed from "
                f"{len(self.sizes)} sources, {how}")

    def _inputs(self, step: int, index: Tensor, source: Tensor) -> Tensor:
        """The inputs at ``index``: a gather, or read from each lazy source (augmented under a
        seed of (step, source), so that a batch stays a function of the seed and step)."""
        if self._lazy is None:
            return self.x[index]
        index, source = index.cpu(), source.cpu()
        parts = []
        for k, x in enumerate(self._lazy):
            mask = source == k
            if mask.any():
                rows = index[mask] - self._offsets[k]
                parts.append((mask, x.load(rows, augment_seed=derive_seed(
                    self.seed, "augment", int(step), k)) if isinstance(x, LazyInputs)
                    else x[rows]))
        first = parts[0][1]
        out = torch.empty((len(index), *first.shape[1:]), dtype=first.dtype)
        for mask, values in parts:
            out[mask] = values.to(first.dtype)
        return on_device(out, self.y.device, self._dtype)

    def _draw(self, step: int) -> tuple[Tensor, Tensor]:
        """(index into the concatenated data, source) of this rank's share of step ``step``."""
        key = (int(step), self.rank, self.world_size)
        if self._last is not None and self._last[:3] == key:
            return self._last[3], self._last[4]
        g = torch.Generator().manual_seed(derive_seed(self.seed, "mixed", int(step)))
        source = torch.multinomial(self._p, self.batch_size, replacement=True, generator=g)
        u = torch.rand(self.batch_size, generator=g, dtype=torch.float64)
        n = self._n[source]
        within = torch.minimum((u * n).long(), n.long() - 1)
        index = self._offsets[source] + within
        if self.world_size > 1:
            share = slice(self.rank, None, self.world_size)
            index, source = index[share], source[share]
        device = self.y.device
        index, source = index.to(device), source.to(device)
        self._last = (*key, index, source)
        return index, source

    def batch(self, step: int) -> tuple[Tensor, ...]:
        """The ``(x, y)`` batch at global step ``step`` (this rank's share of it), or
        ``(x, y, source)`` when the stream was made with ``return_sources=True``."""
        index, source = self._draw(step)
        x = self._inputs(step, index, source)
        if self.return_sources:
            return x, self.y[index], source
        return x, self.y[index]

    def sources(self, step: int) -> Tensor:
        """The source index (position in :attr:`source_names`) of each sample of ``batch(step)``."""
        return self._draw(step)[1]


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _check_compatible(parts: list[Split], names: list[str], stream: str) -> None:
    first = parts[0]
    for source, split in zip(names[1:], parts[1:], strict=True):
        for what, a, b in (("inputs", first.x, split.x), ("targets", first.y, split.y)):
            if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                raise DataError(
                    f"mixed stream '{stream}': source '{source}' has {what} of per-sample shape "
                    f"{tuple(b.shape[1:])} and dtype {b.dtype}, but source '{names[0]}' has "
                    f"{tuple(a.shape[1:])} and {a.dtype}; datasets mixed into one stream need "
                    "the same shapes and dtypes."
                )
