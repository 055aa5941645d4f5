"""Errors a user can act on.

Every error tlroutes raises on purpose is a :class:`TLRoutesError`. Its message says what was wrong
and what to do; the command line prints it without a traceback.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

#: The longest echo of a user's value in a message, in characters (a file name, a key, a value).
#: Longer ones are cut, so that a 10,000-character value cannot bury the message it is in.
MAX_ECHO = 80

#: The longest whole message the command line prints, in characters; the rest is counted, not
#: shown (a run file with hundreds of problems still gives a message a person reads).
MAX_MESSAGE = 4000

# A repr that stops early: a huge list or a deep structure is never rendered in full first.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple, _REPR.maxset = 3, 8, 8, 8, 8
_REPR.maxstring = _REPR.maxother = MAX_ECHO + 2


class TLRoutesError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, missing file or extra)."""


class ConfigError(TLRoutesError, ValueError):
    """A run file, route name or argument is invalid."""


class DataError(TLRoutesError, ValueError):
    """Data does not fit what was declared (shape, labels, finiteness, empty split)."""


class CheckpointError(TLRoutesError):
    """A checkpoint is missing, unreadable or belongs to another model."""


class RunFolderError(TLRoutesError):
    """A file in a run folder is damaged, planted (a symlink out of the folder) or held by another
    run; the message names the file and what to do."""


class TrainingDivergedError(TLRoutesError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class MissingExtraError(TLRoutesError, ImportError):
    """An optional dependency is not installed."""


def shorten(value: object, limit: int = MAX_ECHO, *, quote: bool = False) -> str:
    """``value`` as text for a message, cut at ``limit`` characters (default :data:`MAX_ECHO`).

    Every message that echoes a user's value goes through here. A string is shown as it is
    (``quote=True``: as its ``repr``, quotes and escapes included); anything else as a bounded
    ``repr``. A cut value ends with ``…`` and its full length, e.g. ``'aaaa…' (10,000
    characters)``.
    """
    if isinstance(value, str):
        text = repr(value) if quote else value
        if len(text) <= limit:
            return text
        return f"{text[:limit]}… ({len(value):,} characters)"
    text = _REPR.repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


def clip_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """A whole message cut at ``limit`` characters (default :data:`MAX_MESSAGE`), saying so."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters not shown)"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the nearest choice, or ``""`` when none is close."""
    word = str(word)
    if len(word) > 4 * MAX_ECHO:  # no near miss is that long; spare difflib the work
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
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
