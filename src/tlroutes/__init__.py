"""tlroutes: transfer learning by all eight of its routes, on PyTorch.

The public functions, each the real one (imported on first use, so that ``import tlroutes``
stays fast and does not import torch):

- :func:`run` (:func:`tlroutes.runner.run`): train a run file; returns a typed
  :class:`~tlroutes.summary.Summary`.
- :func:`fit` (:func:`tlroutes.fitting.fit`): a whole run from Python objects (arrays,
  DataFrames, Datasets, Problems, paths) and a trunk name or ``nn.Module``, no run file; returns
  a :class:`~tlroutes.fitting.FitResult` (summary, model, report, ``predict``).
- :func:`plan` (:func:`tlroutes.planner.plan`): the route and recipe for a run file, with reasons.
- ``inspect`` (:func:`tlroutes.measure.evidence.inspect`): measured evidence for two problems.
  Not in ``__all__``: ``from tlroutes import *`` would shadow the standard ``inspect`` module.
- :func:`report` (:func:`tlroutes.reporting.build.build_report`, also as ``build_report``):
  (re)build a run folder's report.
- :func:`route_for` (:func:`tlroutes.matrix.route_for`): the route at a cube cell,
  keyword-only.
- :func:`load` (:func:`tlroutes.use.load`): a run folder's trained model as a
  :class:`~tlroutes.use.Predictor` (``predict``, ``predict_proba``).

The report's modules live in :mod:`tlroutes.reporting` (not ``tlroutes.report``, which is the
function). Routes are found through :func:`get_route` and added with :func:`register_route`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tlroutes.cube_picture import draw_cube
from tlroutes.errors import TLRoutesError
from tlroutes.matrix import Route, route_for

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and editors
    from tlroutes.fitting import FitResult, fit
    from tlroutes.measure.evidence import inspect as inspect  # not in __all__: see above
    from tlroutes.planner import plan
    from tlroutes.reporting.build import build_report
    from tlroutes.reporting.build import build_report as report
    from tlroutes.routes.registry import get_route, list_routes, register_route
    from tlroutes.runner import run
    from tlroutes.summary import Summary
    from tlroutes.use.predictor import Predictor, load

__version__ = "0.1.0"

__all__ = [
    "FitResult", "Predictor", "Route", "Summary", "TLRoutesError", "build_report", "draw_cube",
    "fit", "get_route", "list_routes", "load", "plan", "register_route", "report", "route_for",
    "run", "__version__",
]

# The public functions that import torch or matplotlib, by name: (module, attribute). Each is
# the real function (``tlroutes.run is tlroutes.runner.run``), imported on first access.
_LAZY: dict[str, tuple[str, str]] = {
    "run": ("tlroutes.runner", "run"),
    "fit": ("tlroutes.fitting", "fit"),
    "FitResult": ("tlroutes.fitting", "FitResult"),
    "plan": ("tlroutes.planner", "plan"),
    "inspect": ("tlroutes.measure.evidence", "inspect"),
    "report": ("tlroutes.reporting.build", "build_report"),
    "build_report": ("tlroutes.reporting.build", "build_report"),
    "Summary": ("tlroutes.summary", "Summary"),
    "get_route": ("tlroutes.routes.registry", "get_route"),
    "list_routes": ("tlroutes.routes.registry", "list_routes"),
    "register_route": ("tlroutes.routes.registry", "register_route"),
    "load": ("tlroutes.use.predictor", "load"),
    "Predictor": ("tlroutes.use.predictor", "Predictor"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tlroutes' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
