"""`tlroutes demo --quick`: all eight routes, one table, a report each and an index page."""

from __future__ import annotations

import pytest

from tests.conftest import cli
from tlroutes.config import load_run_file
from tlroutes.demo import example_files, quick_spec, runnable_examples
from tlroutes.matrix import Route
from tlroutes.routes.registry import get_route


def test_quick_cuts_every_stage_and_job_to_a_third():
    for path in example_files():
        spec = load_run_file(path)
        quick = quick_spec(spec)
        reads = get_route(spec.route).RUN_FILE_BLOCKS
        for block in ("source_training", "target_training", "training"):
            before, after = getattr(spec, block).epochs, getattr(quick, block).epochs
            # a block the route does not read keeps its default (or the run is refused)
            assert after == (max(1, -(-before // 3)) if block in reads else before)
        for name, job in quick.recipe.get("jobs", {}).items():
            before = spec.recipe["jobs"][name].get("training", {}).get("epochs", 10)
            assert job["training"]["epochs"] == max(1, -(-before // 3))


@pytest.mark.slow
def test_demo_quick_in_an_empty_folder(tmp_path):
    proc = cli("demo", "--quick", "--out", "demo", check=True, cwd=tmp_path)
    for route in Route:
        assert route.title in proc.stdout, proc.stdout
        assert (tmp_path / "demo" / route.value / "report.html").is_file()
    index = (tmp_path / "demo" / "index.html").read_text()
    for route in Route:
        assert f"{route.value}/report.html" in index
    n = len(runnable_examples())
    assert f"[{n}/{n}]" in proc.stderr  # progress, line-oriented off a terminal
