"""``tlroutes demo``: the routes that have recipes, run on built-in data, into one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlroutes.config import parse_run
from tlroutes.runner import run

DEMO_RUNS: dict[str, dict[str, Any]] = {
    "task_fine_tuning": {
        "route": "task_fine_tuning",
        "source": {"dataset": "digits", "task": "digit", "classes": [0, 1, 2, 3, 4]},
        "target": {"dataset": "digits", "task": "digit", "classes": [5, 6, 7, 8, 9], "n": 150},
        "model": {"trunk": "cnn2d"},
        "source_training": {"epochs": 8, "lr": 0.003},
        "target_training": {"epochs": 15, "batch_size": 32, "patience": 5},
    },
}


def run_demo(out: str | Path, resume: bool = False, progress: bool = True) -> list[dict]:
    """Run every demo run into ``out/<route>``; return their summaries in order."""
    out = Path(out)
    return [
        run(parse_run(data, source=f"demo run '{name}'"), out / name, resume=resume,
            progress=progress)
        for name, data in DEMO_RUNS.items()
    ]
