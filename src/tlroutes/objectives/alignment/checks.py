"""Input checks shared by the alignment losses (their settings use :mod:`tlroutes.checks`).

Each check raises a :class:`~tlroutes.errors.DataError` (a bad tensor) whose message says what to
change, so a wrong call fails at the loss instead of deep inside a matrix product.
"""

from __future__ import annotations

from torch import Tensor

from tlroutes.errors import DataError


def features(name: str, x: Tensor, min_rows: int = 1) -> Tensor:
    """Check ``x`` is a batch of at least ``min_rows`` features and flatten it to ``(B, D)``."""
    if not isinstance(x, Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.dim() < 2:
        raise DataError(
            f"{name} must be a batch of features of shape (B, D), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) or a feature one with x.unsqueeze(1)."
        )
    if x.shape[0] < min_rows:
        raise DataError(
            f"{name} has {x.shape[0]} sample(s) but this loss needs at least {min_rows} per "
            "domain; use a larger batch."
        )
    return x.flatten(1)


def feature_pair(f_s: Tensor, f_t: Tensor, min_rows: int = 1) -> tuple[Tensor, Tensor]:
    """Check source and target features (:func:`features`, :func:`same_width`); both ``(B, D)``."""
    f_s, f_t = features("f_s", f_s, min_rows), features("f_t", f_t, min_rows)
    same_width(f_s, f_t)
    return f_s, f_t


def same_width(f_s: Tensor, f_t: Tensor) -> None:
    """DataError unless source and target features ``(B, D)`` have the same width D."""
    if f_s.shape[1] != f_t.shape[1]:
        raise DataError(
            f"Source and target features must have the same width, got {f_s.shape[1]} and "
            f"{f_t.shape[1]}; pass both domains through the same trunk."
        )


def logits(name: str, g: object, rows: int, classes: int | None = None) -> Tensor:
    """Check ``g`` holds head outputs ``(rows, K)`` (K = ``classes`` when given) and return it.

    ``rows`` is the batch size of the features ``g`` was computed from: a mismatch means the
    logits and the features come from different batches.
    """
    shape = tuple(getattr(g, "shape", ()))
    ok = isinstance(g, Tensor) and g.dim() == 2 and g.shape[0] == rows
    if ok and classes is not None:
        ok = g.shape[1] == classes
    if not ok:
        width = "K" if classes is None else str(classes)
        raise DataError(
            f"{name} must be logits of shape (B, {width}) with the same B as its features "
            f"({rows}), got {shape if isinstance(g, Tensor) else type(g).__name__}; pass the "
            "head's outputs for the same batch."
        )
    return g
