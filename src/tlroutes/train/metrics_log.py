"""The run's metrics as JSON lines: one object per finished epoch of any stage."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tlroutes.train.tracking import Tracker


class MetricsLog:
    """Append-only ``metrics.jsonl``; a resumed stage rewrites its own lines from its checkpoint.

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
        """Write one record and flush it to disk."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._track([record], self._lines)

    def replace_stage(self, stage: str, records: list[dict[str, Any]]) -> None:
        """Drop ``stage``'s lines and write ``records`` in their place (used on resume)."""
        if not self.enabled:
            return
        kept = [r for r in self.read() if r.get("stage") != stage]
        tmp = self.path.with_suffix(".jsonl.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            for record in kept + records:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)
        # The stage's lines come last: the stage stopped mid-way was the run's latest.
        self._track(records, len(kept))

    def read(self) -> list[dict[str, Any]]:
        """All records; a partly written last line (a kill mid-write) is skipped."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

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
