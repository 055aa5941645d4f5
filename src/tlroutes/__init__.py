"""tlroutes: transfer learning by all eight of its routes, on PyTorch.

The cube lives in :mod:`tlroutes.matrix` (imported here, it is light); the rest is imported on
first use, so that ``import tlroutes`` stays fast.
"""

from tlroutes.cube_picture import draw_cube
from tlroutes.errors import TLRoutesError
from tlroutes.matrix import Route, route_for

__version__ = "0.1.0"

__all__ = [
    "Route", "TLRoutesError", "build_report", "draw_cube", "inspect", "plan", "route_for", "run",
    "__version__",
]


def run(spec, out, *, resume: bool = False, progress: bool = True) -> dict:
    """Train a run file (path or :class:`tlroutes.config.RunSpec`) into the folder ``out``.

    See :func:`tlroutes.runner.run`; returns the summary that is also written as summary.json.
    """
    from tlroutes.runner import run as _run

    return _run(spec, out, resume=resume, progress=progress)


def inspect(first, second=None, **kwargs):
    """Measure how two problems (or a run file's problems) relate; return the evidence.

    See :func:`tlroutes.measure.evidence.inspect` for the arguments; the result is what
    ``tlroutes inspect`` prints and writes as JSON.
    """
    from tlroutes.measure.evidence import inspect as _inspect

    return _inspect(first, second, **kwargs)


def plan(spec, **kwargs):
    """Name the route for a run file from its declarations and measurements; return the plan.

    See :func:`tlroutes.planner.plan`; the result is what ``tlroutes plan`` prints and writes.
    """
    from tlroutes.planner import plan as _plan

    return _plan(spec, **kwargs)


def build_report(run_dir):
    """Build (or rebuild) a run folder's report.html and report.md; return what was written.

    See :func:`tlroutes.report.build_report`. (Named so that it does not shadow the
    :mod:`tlroutes.report` package.)
    """
    from tlroutes.report import build_report as _build

    return _build(run_dir)
