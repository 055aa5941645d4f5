"""Progress display: a live bar on a terminal, one plain line per epoch elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressReporter:
    """Shows stage, epoch and step progress with time left.

    Args:
        enabled: False silences it (e.g. on data-parallel ranks other than 0).
        live: force the live bar (True) or plain lines (False); None (default) picks the bar
            only when stderr is a terminal.
    """

    def __init__(self, enabled: bool = True, live: bool | None = None) -> None:
        self.enabled = enabled
        # soft_wrap: off a terminal a line stays one line (rich would wrap at 80 columns).
        self.console = Console(stderr=True, soft_wrap=True)
        self.live = (sys.stderr.isatty() if live is None else live) and enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self._stage = ""
        self._t0 = 0.0
        self._first_epoch = 0

    def start_stage(self, name: str, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        """Begin a stage of ``epochs × steps_per_epoch`` steps, ``start_epoch`` already done."""
        self._stage, self._t0, self._first_epoch = name, time.perf_counter(), start_epoch
        if not self.enabled:
            return
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                name, total=epochs * steps_per_epoch, completed=start_epoch * steps_per_epoch,
                info="",
            )
        elif start_epoch:
            self.console.print(
                f"[{name}] resuming at epoch {start_epoch + 1}/{epochs}", markup=False
            )

    def note(self, message: str) -> None:
        """Print one plain line (e.g. which data path a stream takes)."""
        if self.enabled:
            self.console.print(message, highlight=False, markup=False)

    def advance(self, steps: int) -> None:
        """Count ``steps`` more finished steps."""
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def end_epoch(self, record: dict[str, Any], epochs: int) -> None:
        """Show one finished epoch's figures."""
        if not self.enabled:
            return
        shown = ", ".join(
            f"{k}={v:.4g}" for k, v in record.items()
            if isinstance(v, float) and k not in ("time_s", "lr")
        )
        if self._progress is not None:
            self._progress.update(self._task, info=f"epoch {record['epoch'] + 1}/{epochs} {shown}")
        else:
            self.console.print(
                f"[{self._stage}] epoch {record['epoch'] + 1}/{epochs} {shown} "
                f"({record['time_s']:.1f}s, {self.time_left(record['epoch'], epochs)})",
                highlight=False, markup=False,
            )

    def time_left(self, epoch: int, epochs: int) -> str:
        """The stage's time left after epoch ``epoch`` (0-based), from this session's pace."""
        done = epoch + 1 - self._first_epoch
        if done <= 0:
            return "time left unknown"
        per_epoch = (time.perf_counter() - self._t0) / done
        return f"~{per_epoch * (epochs - epoch - 1):.0f}s left"

    def end_stage(self, message: str = "") -> None:
        """Close the stage's display."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.enabled and message:
            self.console.print(f"[{self._stage}] {message}", highlight=False, markup=False)
