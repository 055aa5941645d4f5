"""Task variants over digit data: what is predicted from a digit image or signal.

============== ============== ==================================================================
variant        kind           target
============== ============== ==================================================================
``digit``      classification the digit; labels ``"0".."9"`` (or the kept ``classes``, re-indexed)
``parity``     classification ``("even", "odd")``
``gt4``        classification greater than 4: ``("<=4", ">4")``
``properties`` multilabel     four 0/1 properties of the digit, float ``(N, 4)`` with labels
                              ``("even", ">4", "prime", "loop")`` (see :data:`PROPERTIES`)
``position``   regression     the digit is pasted at a random place on a larger zero canvas; the
                              target is its top-left corner normalised to ``[0, 1]``: images
                              ``(row, col)`` on a 16×16 canvas, signals ``(offset,)`` on length
                              80 by default (``load_builtin``'s ``canvas`` sets the size)
============== ============== ==================================================================

Every variant reads the same inputs: for one dataset, shift, ``n``, ``seed`` and ``canvas`` the
samples are identical whatever the variant, so two variants form a "different task, same domain"
pair. Only ``position`` places the samples on a canvas by itself; the others do with ``canvas``.

The ``loop`` property is 1 for the digits usually drawn with a closed loop: 0, 4, 6, 8 and 9
(4 in its closed, printed form). Handwriting varies (an open 4, a looped 2), so ``loop`` is a fixed
per-digit convention, not a measurement of each sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import torch
from torch import Tensor

from tlroutes.errors import ConfigError, DataError, did_you_mean
from tlroutes.problem import Task

TASK_VARIANTS: Mapping[str, str] = MappingProxyType(
    {
        "digit": "classification of the digit (10 classes, or the kept `classes`)",
        "parity": "classification: even or odd digit",
        "gt4": "classification: digit <= 4 or > 4",
        "properties": "multilabel: even, > 4, prime, drawn with a closed loop (0/1 each)",
        "position": "regression: top-left corner of the digit on a larger zero canvas, in [0, 1]",
    }
)
"""Task variants by name, with what each predicts."""

#: Default canvas size for the ``position`` variant, by modality: images (H, W), signals (L,).
CANVAS: Mapping[str, tuple[int, ...]] = MappingProxyType({"image": (16, 16), "signal": (80,)})

#: Size of one sample before placement, by modality: digits 8×8 images, MNIST-1D length 40.
SAMPLE_SIZE: Mapping[str, tuple[int, ...]] = MappingProxyType({"image": (8, 8), "signal": (40,)})

PROPERTIES: Mapping[str, frozenset[int]] = MappingProxyType(
    {
        "even": frozenset({0, 2, 4, 6, 8}),
        ">4": frozenset({5, 6, 7, 8, 9}),
        "prime": frozenset({2, 3, 5, 7}),
        "loop": frozenset({0, 4, 6, 8, 9}),
    }
)
"""The ``properties`` variant's labels, in output order, each with the digits for which it is 1.

``loop``: digits usually drawn with a closed loop (0, 4, 6, 8, 9); a fixed per-digit convention.
"""


def check_variant(task: str) -> str:
    """Return ``task`` if it is a known variant, else raise :class:`ConfigError`."""
    if task not in TASK_VARIANTS:
        raise ConfigError(
            f"Unknown task variant '{task}'; valid variants: {', '.join(TASK_VARIANTS)}."
            f"{did_you_mean(str(task), TASK_VARIANTS)}"
        )
    return task


def check_classes(classes: Sequence[int] | None, task: str) -> tuple[int, ...]:
    """Validate the digit classes to keep; return them sorted (all ten for ``None``).

    Raises:
        ConfigError: for a non-digit, a repeated class, an empty list, or fewer than two classes
            with the ``digit`` variant (a classifier needs two labels).
    """
    if classes is None:
        return tuple(range(10))
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise ConfigError(
            f"classes must be a list of digits 0..9, e.g. [0, 1, 2], got {classes!r}."
        )
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 9]
    if bad:
        raise ConfigError(f"classes must be digits 0..9; {bad!r} are not.")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes={list(classes)} repeats a digit; list each digit once.")
    if not classes:
        raise ConfigError("classes is empty; keep at least one digit (two for task='digit').")
    if task == "digit" and len(classes) < 2:
        raise ConfigError(
            f"classes={list(classes)} keeps one digit, but task='digit' is a classification and "
            "needs at least two classes."
        )
    return tuple(sorted(int(c) for c in classes))


def make_task(variant: str, classes: Sequence[int], modality: str) -> Task:
    """The :class:`Task` of a variant; ``classes`` are the kept digits (sorted)."""
    if variant == "digit":
        return Task("classification", tuple(str(c) for c in classes), name="digit")
    if variant == "parity":
        return Task("classification", ("even", "odd"), name="parity")
    if variant == "gt4":
        return Task("classification", ("<=4", ">4"), name="gt4")
    if variant == "properties":
        return Task("multilabel", tuple(PROPERTIES), name="properties")
    labels = ("row", "col") if modality == "image" else ("offset",)
    return Task("regression", labels, name="position")


def class_targets(variant: str, digits: Tensor, classes: Sequence[int]) -> Tensor:
    """Classification targets (long ``(N,)``) of a variant from the digit of each sample."""
    digits = digits.long()
    if variant == "digit":
        lookup = torch.full((10,), -1, dtype=torch.long)
        lookup[torch.tensor(list(classes))] = torch.arange(len(classes))
        return lookup[digits]
    if variant == "parity":
        return digits % 2
    if variant == "gt4":
        return (digits > 4).long()
    raise ConfigError(f"Task variant '{variant}' is not a classification.")


def property_targets(digits: Tensor) -> Tensor:
    """Multilabel targets of the ``properties`` variant: float ``(N, 4)`` of 0/1.

    Columns follow :data:`PROPERTIES`: ``even``, ``>4``, ``prime``, ``loop``.
    """
    table = torch.tensor(
        [[float(d in members) for members in PROPERTIES.values()] for d in range(10)]
    )
    return table[digits.long()]


def canvas_size(canvas: object, modality: str, variant: str) -> tuple[int, ...] | None:
    """Validate ``load_builtin``'s ``canvas``; return the canvas's spatial size or ``None``.

    ``None`` means no canvas, except for ``position``, which then uses :data:`CANVAS`. An integer
    ``k`` means ``(k, k)`` for images and ``(k,)`` for signals.

    Raises:
        ConfigError: for a non-integer, or a canvas smaller than one sample (8 for images, 40
            for signals).
    """
    if canvas is None:
        return CANVAS[modality] if variant == "position" else None
    if isinstance(canvas, bool) or not isinstance(canvas, (int, np.integer)):
        raise ConfigError(
            f"canvas must be an integer (the canvas side in pixels for images, its length in "
            f"samples for signals) or None, got {canvas!r}."
        )
    smallest = SAMPLE_SIZE[modality][0]
    if canvas < smallest:
        what = "8×8 image" if modality == "image" else "40-sample signal"
        raise ConfigError(
            f"canvas={int(canvas)} is too small: each {modality} sample is a {what}, so canvas "
            f"must be >= {smallest}."
        )
    return (int(canvas),) * len(SAMPLE_SIZE[modality])


def place_on_canvas(
    x: Tensor, canvas: Sequence[int], generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Paste each sample at a uniformly random place on a zero canvas.

    Args:
        x: batch ``(N, C, *size)`` — images ``(N, C, H, W)`` or signals ``(N, C, L)``.
        canvas: the canvas's spatial size, e.g. ``(16, 16)`` or ``(80,)``; each entry at least the
            sample's.
        generator: the source of the random offsets.

    Returns:
        ``(placed, target)``: the canvases ``(N, C, *canvas)`` and the offsets of the sample's
        first element (top-left corner) per spatial dimension, each divided by
        ``canvas - size`` so that it lies in ``[0, 1]``, float ``(N, len(canvas))``. An offset
        ``o`` means the sample occupies ``[o, o + size)`` along that dimension.
    """
    n, c, *size = x.shape
    if len(size) != len(canvas) or any(s > k for s, k in zip(size, canvas, strict=True)):
        raise DataError(f"cannot place samples of size {tuple(size)} on a canvas {tuple(canvas)}.")
    room = [k - s for s, k in zip(size, canvas, strict=True)]
    offsets = torch.stack([torch.randint(0, r + 1, (n,), generator=generator) for r in room], dim=1)
    # Flat canvas position of every element of every sample: (offset + coordinate) . strides.
    coords = torch.meshgrid(*[torch.arange(s) for s in size], indexing="ij")
    strides = [math.prod(canvas[d + 1 :]) for d in range(len(canvas))]
    flat = sum(
        (offsets[:, d, None] + coords[d].reshape(1, -1)) * strides[d] for d in range(len(size))
    )
    placed = x.new_zeros((n, c, math.prod(canvas)))
    placed.scatter_(2, flat[:, None, :].expand(n, c, -1), x.reshape(n, c, -1))
    placed = placed.reshape(n, c, *canvas)
    scale = torch.tensor([max(r, 1) for r in room], dtype=torch.float32)
    return placed, offsets.float() / scale
