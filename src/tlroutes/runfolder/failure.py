"""``failed.json``: what stopped a run, written by the runner, read by the report and ``--resume``.

A run that stops on an error records the error's kind, its message (cut to
:data:`MESSAGE_LIMIT` characters) and whether resuming with the same run file can get past it:
a resume repeats the run exactly, so a diverged loss or bad data would stop it the same way. A
run that finishes removes the record; a fresh start into the folder removes a stale one.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tlroutes.errors import DataError, TLRoutesError, TrainingDivergedError, shorten
from tlroutes.runfolder.atomic import write_json

FAILURE_FILE = "failed.json"
"""The record's name in the run folder."""
MESSAGE_LIMIT = 2000
"""Characters of the error's message kept in the record."""


REPEATING_ERRORS: tuple[type[BaseException], ...] = (TrainingDivergedError, DataError)
"""Errors a resume with the same run file meets again: a resume repeats the run exactly (the
same loss diverges at the same step), and the same data fails the same check."""


def is_recorded(error: BaseException) -> bool:
    """Whether ``error``, stopping a started run, is recorded: a repeating error, or one tlroutes
    did not raise on purpose (a bug, the machine, Ctrl-C). Other deliberate errors are refusals
    that say what to change, and are not recorded."""
    return isinstance(error, REPEATING_ERRORS) or not isinstance(error, TLRoutesError)


class FailureRecord(BaseModel):
    """``failed.json``: the error that stopped the run."""

    model_config = ConfigDict(extra="ignore")

    error: str = Field(description="The error's kind (its class name, or 'interrupted').")
    message: str = Field(description="The error's message, cut to MESSAGE_LIMIT characters.")
    resumable: bool = Field(description="Whether --resume with the same run file can continue "
                            "past it (false for a diverged loss or bad data).")


def record_failure(out: Path, error: BaseException) -> None:
    """Write ``out/failed.json`` for ``error`` when :func:`is_recorded`; a record that cannot be
    written is skipped (the run's own error is what the user must see)."""
    if not is_recorded(error):
        return
    resumable = not isinstance(error, REPEATING_ERRORS)
    kind = "interrupted" if isinstance(error, KeyboardInterrupt) else type(error).__name__
    record = FailureRecord(error=kind, message=shorten(str(error) or kind, MESSAGE_LIMIT),
                           resumable=resumable)
    with contextlib.suppress(OSError, TLRoutesError):
        write_json(out / FAILURE_FILE, record.model_dump(), root=out)


def read_failure(out: Path) -> FailureRecord | None:
    """The record in ``out``, or None when there is none or it cannot be read (a damaged record
    must neither block a resume nor stop a report)."""
    path = out / FAILURE_FILE
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return FailureRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError, RecursionError):
        return None


def clear_failure(out: Path) -> None:
    """Remove ``out``'s record (a finished run, or a fresh start)."""
    with contextlib.suppress(OSError):
        (out / FAILURE_FILE).unlink(missing_ok=True)
