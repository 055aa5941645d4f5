"""Argument checks shared across the library: numbers, integers, seeds, choices, batch sizes.

The bottom layer (it imports only :mod:`tlroutes.errors`): the objectives, the backbones and the
data use these instead of hand-rolling the same test, so a bad setting fails the same way
everywhere, with a message that names the argument, says what it must be and what it got.
A ``bool`` is never taken for a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from tlroutes.errors import ConfigError, DataError

__all__ = ["batch_size", "check_seed", "choice", "finite", "non_negative", "positive",
           "positive_int"]


def _real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def finite(name: str, value: float) -> float:
    """``value`` as a float; :class:`ConfigError` unless it is a finite number."""
    if not _real(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def positive(name: str, value: float) -> float:
    """``value`` as a float; :class:`ConfigError` unless it is a finite number > 0."""
    if not (_real(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def non_negative(name: str, value: float) -> float:
    """``value`` as a float; :class:`ConfigError` unless it is a finite number >= 0."""
    if not (_real(value) and value >= 0):
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}.")
    return float(value)


def positive_int(name: str, value: int, minimum: int = 1) -> int:
    """``value`` as an int; :class:`ConfigError` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_seed(seed: int) -> int:
    """``seed`` as an int; :class:`ConfigError` unless it is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def choice(name: str, value: str, allowed: Sequence[str]) -> str:
    """``value``; :class:`ConfigError` unless it is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(
            f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}."
        )
    return value


def batch_size(stream: str, size: int, world_size: int = 1) -> int:
    """``size``; :class:`DataError` unless the stream ``stream`` can draw batches of it, at least
    one sample for each of the ``world_size`` data-parallel processes."""
    if size < 1:
        raise DataError(f"stream '{stream}': batch_size must be at least 1, got {size}.")
    if size < world_size:
        raise DataError(
            f"stream '{stream}': batch_size {size} is smaller than the {world_size} "
            "data-parallel processes; use a batch of at least one sample per process."
        )
    return size
