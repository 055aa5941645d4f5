"""Errors a user can act on.

Every error tlroutes raises on purpose is a :class:`TLRoutesError`. Its message says what was wrong
and what to do; the command line prints it without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TLRoutesError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, missing file or extra)."""


class ConfigError(TLRoutesError, ValueError):
    """A run file, route name or argument is invalid."""


class DataError(TLRoutesError, ValueError):
    """Data does not fit what was declared (shape, labels, finiteness, empty split)."""


class CheckpointError(TLRoutesError):
    """A checkpoint is missing, unreadable or belongs to another model."""


class TrainingDivergedError(TLRoutesError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class MissingExtraError(TLRoutesError, ImportError):
    """An optional dependency is not installed."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the nearest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def require_extra(module: str, extra: str, purpose: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    Args:
        module: the module to import, e.g. ``"tensorboard"``.
        extra: the tlroutes extra that provides it, e.g. ``"tracking"``.
        purpose: what the module is needed for, shown in the message.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the optional package '{module}', which is not installed. "
            f"Install it with: pip install 'tlroutes[{extra}]'"
        ) from exc
