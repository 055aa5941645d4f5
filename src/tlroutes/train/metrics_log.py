"""The run's metrics as JSON lines: one object per finished epoch of any stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlroutes.runfolder import atomic_write
from tlroutes.runfolder.reads import read_metrics

if TYPE_CHECKING:
    from tlroutes.train.tracking import Tracker


class MetricsLog:
    """``metrics.jsonl``: one line per finished epoch; a resumed stage rewrites its own lines
    from its checkpoint.

    Every change rewrites the whole file atomically (:func:`tlroutes.runfolder.atomic_write`), so
    a kill never leaves a torn line, and a line that does not parse is damage, reported by
    :func:`tlroutes.runfolder.reads.read_metrics` (the file holds one line per epoch: rewriting
    it costs microseconds per epoch, nothing per step).

    Every record written is also passed to ``tracker`` at a global step: the record's line number
    in the file (from 0). Lines already in the file when the log is opened (a resumed run) were
    tracked by the stopped run, so only lines past them are passed on: a resumed run never
    tracks a step twice or goes back.

    Args:
        path: the file; created on first write.
        enabled: False makes every call a no-op (data-parallel ranks other than 0).
        tracker: also log each record there (TensorBoard, MLflow). Default None: the file only.
    """

    def __init__(self, path: Path, enabled: bool = True, tracker: Tracker | None = None) -> None:
        self.path, self.enabled, self.tracker = Path(path), enabled, tracker
        # Lines in the file now, and the first step not yet tracked.
        self._lines = len(self.read()) if enabled and tracker is not None else 0
        self._tracked = self._lines

    def append(self, record: dict[str, Any]) -> None:
        """Write one record (the whole file, atomically)."""
        if not self.enabled:
            return
        records = self.read() + [record]
        self._write(records)
        self._track([record], len(records) - 1)

    def replace_stage(self, stage: str, records: list[dict[str, Any]]) -> None:
        """Drop ``stage``'s lines and write ``records`` in their place (used on resume)."""
        if not self.enabled:
            return
        kept = [r for r in self.read() if r.get("stage") != stage]
        self._write(kept + list(records))
        # The stage's lines come last: the stage stopped mid-way was the run's latest.
        self._track(records, len(kept))

    def read(self) -> list[dict[str, Any]]:
        """All records, validated (a damaged line raises
        :class:`~tlroutes.errors.RunFolderError` naming it)."""
        # Read afresh each time (a few KB once per epoch): two logs of one file in a process
        # (a route's trainer and its jobs' runner) must not drop each other's lines.
        return read_metrics(self.path)

    def _write(self, records: list[dict[str, Any]]) -> None:
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def _track(self, records: list[dict[str, Any]], first_step: int) -> None:
        """Pass on the records now at lines ``first_step``, … that are past the tracked ones."""
        self._lines = first_step + len(records)
        if self.tracker is None:
            return
        for step, record in enumerate(records, start=first_step):
            # A checkpoint can hold an epoch whose line the kill cut off: tracked now. Lines the
            # stopped run tracked already are not tracked again.
            if step >= self._tracked:
                self.tracker.log_metrics(record, step)
                self._tracked = step + 1
