"""``tlroutes demo``: every example run file whose route has a recipe, on built-in data.

The example run files ship inside the package (``tlroutes/examples/``; the repository's
``examples/`` folder points there), so the demo runs the same files a user copies.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tlroutes.config import load_run_file
from tlroutes.matrix import Route
from tlroutes.routes import MODULES
from tlroutes.runner import run


def example_files() -> list[Path]:
    """The packaged example run files, in the cube's order of routes."""
    folder = Path(str(resources.files("tlroutes") / "examples"))
    return [folder / f"{route.value}.yaml" for route in Route
            if (folder / f"{route.value}.yaml").is_file()]


def runnable_examples() -> list[Path]:
    """The example files whose route has a recipe in this version."""
    return [p for p in example_files() if Route.parse(load_run_file(p).route) in MODULES]


def run_demo(out: str | Path, resume: bool = False, progress: bool = True) -> list[dict]:
    """Run every runnable example into ``out/<route>``; return their summaries in order."""
    out = Path(out)
    return [run(path, out / path.stem, resume=resume, progress=progress)
            for path in runnable_examples()]
