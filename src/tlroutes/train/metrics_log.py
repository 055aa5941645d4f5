"""The run's metrics as JSON lines: one object per finished epoch of any stage."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only ``metrics.jsonl``; a resumed stage rewrites its own lines from its checkpoint.

    Args:
        path: the file; created on first write.
        enabled: False makes every call a no-op (data-parallel ranks other than 0).
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and flush it to disk."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

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
