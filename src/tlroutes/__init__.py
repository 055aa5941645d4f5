"""tlroutes: transfer learning by all eight of its routes, on PyTorch.

The cube lives in :mod:`tlroutes.matrix` (imported here, it is light); the rest is imported on
first use, so that ``import tlroutes`` stays fast.
"""

from tlroutes.errors import TLRoutesError
from tlroutes.matrix import Route, draw_cube, route_for

__version__ = "0.1.0"

__all__ = ["Route", "TLRoutesError", "draw_cube", "route_for", "run", "__version__"]


def run(spec, out, *, resume: bool = False, progress: bool = True) -> dict:
    """Train a run file (path or :class:`tlroutes.config.RunSpec`) into the folder ``out``.

    See :func:`tlroutes.runner.run`; returns the summary that is also written as summary.json.
    """
    from tlroutes.runner import run as _run

    return _run(spec, out, resume=resume, progress=progress)
