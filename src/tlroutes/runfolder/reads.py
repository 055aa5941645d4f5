"""Validated reads of a run folder's side files.

Every file tlroutes reads back from a run folder goes through one of these readers, which turn
any damage (not UTF-8, not JSON or YAML, the wrong shape, too deep, truncated) into one
:class:`~tlroutes.errors.RunFolderError` naming the file and what to do, never a traceback. The
shapes are pydantic models: :class:`LatestPointer` (``latest.json``), :class:`DoneRecord`
(``done.json``), :class:`MetricsRecord` (a ``metrics.jsonl`` line); ``summary.json`` is read into
:class:`tlroutes.summary.Summary` and ``run.yaml`` must be a mapping naming a route.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tlroutes.errors import ConfigError, RunFolderError, TLRoutesError

__all__ = ["ADVICE", "DoneRecord", "LatestPointer", "MAX_SIDE_FILE_BYTES", "MetricsRecord",
           "damaged", "read_done", "read_json", "read_latest", "read_metrics", "read_model",
           "read_npz", "read_run_yaml", "read_summary", "read_text"]

#: Side files larger than this (bytes) are refused as damaged: tlroutes writes none near it
#: (``metrics.jsonl`` of 100,000 epochs is ~30 MB), and a huge one would only exhaust memory.
MAX_SIDE_FILE_BYTES = 256 * 2**20

#: What to do, by the kind of file that is damaged.
ADVICE = {
    "run.yaml": "run.yaml is the resolved run file the run was started with: restore it (from a "
                "backup or by hand), or start the run again in a new --out folder",
    "summary.json": "write it again with `tlroutes run RUN.yaml --out DIR --resume` (finished "
                    "stages are reused, nothing is trained again), or start a new --out",
    "latest.json": "resume with --resume: the newest intact checkpoint is used",
    "done.json": "delete it and run again with --resume: the stage resumes from its newest "
                 "intact checkpoint (or start a new --out)",
    "metrics.jsonl": "delete the damaged line (or the file) and run again with --resume, which "
                     "rewrites each stage's lines from its checkpoint; or start a new --out",
    "features.npz": "delete it and run again with --resume: it is written again from the "
                    "finished stages; then rebuild the report with `tlroutes report DIR`",
    "report": "rebuild the report with `tlroutes report DIR`",
    "inputs.json": "delete it and resume with --resume: the inputs' fingerprint is then taken "
                   "again (without a check against the run's start), or start a new --out",
    "backend.json": "delete it and resume with --resume: the backend is chosen again",
}

M = TypeVar("M", bound=BaseModel)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatestPointer(_Record):
    """``latest.json``: the newest checkpoint folder of a stage."""

    dir: str = Field(pattern=r"^epoch-\d{4,}$", description="The folder, e.g. 'epoch-0003'.")
    epoch: int = Field(ge=0, description="Its epoch (from 0).")


class DoneRecord(_Record):
    """``done.json``: a finished stage's result (:class:`tlroutes.train.engine.StageResult`)."""

    name: str
    best_epoch: int = Field(ge=-1)
    best_score: float
    epochs_run: int = Field(ge=0)
    stopped_early: bool
    history: list[dict[str, Any]] = Field(default_factory=list)


class MetricsRecord(BaseModel):
    """One ``metrics.jsonl`` line: a finished epoch of a stage, and its figures."""

    model_config = ConfigDict(extra="allow")

    stage: str
    epoch: int = Field(ge=0)


def damaged(path: Path, why: str, kind: str | None = None) -> RunFolderError:
    """The one error for a damaged run-folder file: the file, what is wrong, what to do."""
    advice = ADVICE.get(kind or Path(path).name)
    why = why if len(why) <= 300 else why[:297] + "..."
    return RunFolderError(f"{path} is damaged: {why}." + (f" To go on, {advice}." if advice
                                                          else ""))


def read_text(path: Path, kind: str | None = None) -> str:
    """The file's UTF-8 text; not UTF-8, too large or unreadable is damage; a symlink (planted:
    tlroutes writes none) is refused, so a run folder never reads a file outside it."""
    if path.is_symlink():
        raise RunFolderError(f"{path} is a symbolic link; tlroutes neither reads nor writes "
                             "through a link in a run folder. Remove the link, or start a new "
                             "--out folder.")
    try:
        size = path.stat().st_size
        if size > MAX_SIDE_FILE_BYTES:
            raise damaged(path, f"it is {size} bytes, far more than tlroutes writes", kind)
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise damaged(path, f"it is not UTF-8 text ({exc.reason} at byte {exc.start})",
                      kind) from None
    except IsADirectoryError:
        raise damaged(path, "it is a folder, not a file", kind) from None
    except OSError as exc:
        raise damaged(path, f"it cannot be read ({exc.strerror or exc})", kind) from None


def _loads(text: str) -> Any:
    # JSON with NaN/Infinity allowed (tlroutes writes them for a diverged score).
    return json.loads(text)


def read_json(path: Path, kind: str | None = None) -> Any:
    """The file's JSON value; invalid, empty or absurdly deep JSON is damage."""
    text = read_text(path, kind)
    if not text.strip():
        raise damaged(path, "it is empty", kind)
    try:
        return _loads(text)
    except json.JSONDecodeError as exc:
        raise damaged(path, f"it is not valid JSON ({exc.msg}, line {exc.lineno})", kind) from None
    except RecursionError:
        raise damaged(path, "it is nested far too deeply to be tlroutes' file", kind) from None


def _validated(path: Path, model: type[M], data: Any, kind: str | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the top level'}: {e['msg']}"
            for e in exc.errors()[:3])
        raise damaged(path, f"it has the wrong shape ({problems})", kind) from None
    except RecursionError:
        raise damaged(path, "it is nested far too deeply", kind) from None


def read_model(path: Path, model: type[M], kind: str | None = None) -> M:
    """``path``'s JSON validated as ``model``."""
    return _validated(path, model, read_json(path, kind), kind)


def read_latest(path: Path) -> LatestPointer:
    """A stage's ``latest.json``."""
    return read_model(path, LatestPointer, "latest.json")


def read_done(path: Path) -> DoneRecord:
    """A stage's ``done.json``."""
    return read_model(path, DoneRecord, "done.json")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of ``metrics.jsonl``; a bad line is damage, naming its line number.

    One exception: a last line without its newline that does not parse is the torn end of an
    append that a kill cut short (older tlroutes appended in place), so it is skipped.
    """
    if not path.is_file():
        return []
    text = read_text(path, "metrics.jsonl")
    lines = text.split("\n")
    torn_tail = not text.endswith("\n")
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = _loads(line)
        except (json.JSONDecodeError, RecursionError):
            if torn_tail and number == len(lines):
                continue
            raise damaged(path, f"line {number} is not a JSON record", "metrics.jsonl") from None
        try:
            out.append(MetricsRecord.model_validate(record).model_dump())
        except ValidationError:
            raise damaged(path, f"line {number} is not an epoch's record (it needs 'stage' and "
                          "'epoch' of a finished epoch)", "metrics.jsonl") from None
    return out


def read_summary(path: Path) -> Any:
    """``summary.json`` as a :class:`tlroutes.summary.Summary`."""
    from tlroutes.summary import Summary

    data = read_json(path, "summary.json")
    if not isinstance(data, dict):
        raise damaged(path, f"it holds a JSON {type(data).__name__}, not the summary's object",
                      "summary.json")
    try:
        return Summary.from_dict(data, where=str(path))
    except RecursionError:
        raise damaged(path, "it is nested far too deeply", "summary.json") from None
    except TLRoutesError as exc:
        why = str(exc).replace(f"{path} is ", "it is ", 1).split(". Run the route")[0]
        raise damaged(path, why.rstrip("."), "summary.json") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise damaged(path, f"it has the wrong shape ({exc})", "summary.json") from None


def read_run_yaml(path: Path) -> dict[str, Any]:
    """``run.yaml`` as a mapping, validated as a run (:class:`tlroutes.config.RunSpec`).

    Returns the mapping as saved (a resume compares it with the run file field by field)."""
    text = read_text(path, "run.yaml")
    if not text.strip():
        raise damaged(path, "it is empty", "run.yaml")
    from tlroutes.config import parse_run, parse_yaml

    try:
        data = parse_yaml(text, str(path))
    except ConfigError as exc:
        why = str(exc).replace(f"{path} ", "it ", 1).rstrip(".")
        raise damaged(path, why, "run.yaml") from None
    if not isinstance(data, dict) or not isinstance(data.get("route"), str):
        raise damaged(path, "it is not a mapping of run fields with a route", "run.yaml")
    try:
        parse_run(data, str(path))
    except ConfigError as exc:
        raise damaged(path, f"it is not a valid run ({exc})", "run.yaml") from None
    return data


def read_npz(path: Path, kind: str | None = None) -> dict[str, Any]:
    """Every array of an ``.npz`` file, read in full (no pickles); truncation is damage."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
            zipfile.LargeZipFile) as exc:
        raise damaged(path, f"it cannot be read as an .npz archive ({exc})", kind) from None
    except Exception as exc:  # zlib.error on a truncated member, and other codec errors
        raise damaged(path, f"it cannot be read as an .npz archive ({exc})", kind) from None
    return arrays

