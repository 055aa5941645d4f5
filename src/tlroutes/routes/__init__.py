"""Route recipes: one short file per route.

Each route module defines ``ROUTE``, a ``Recipe`` (its ``recipe:`` block in a run file: a
:class:`~tlroutes.routes.common.RecipeSpec` with every field documented) and
``run(spec, recipe, trainer) -> summary``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tlroutes.matrix import Route

MODULES: dict[Route, str] = {
    Route.TASK_FINE_TUNING: "tlroutes.routes.task_fine_tuning",
    Route.DOMAIN_ADAPTATION: "tlroutes.routes.domain_adaptation",
    Route.TASK_ADAPTATION: "tlroutes.routes.task_adaptation",
    Route.MODALITY_TRANSFER: "tlroutes.routes.modality_transfer",
    Route.DATASET_MERGING: "tlroutes.routes.dataset_merging",
    Route.WEIGHT_SHARING: "tlroutes.routes.weight_sharing",
    Route.MULTI_TASK_LEARNING: "tlroutes.routes.multi_task_learning",
    Route.PARALLEL_TRAINING: "tlroutes.routes.parallel_training",
}


def recipe_for(route: Route) -> ModuleType:
    """The module that runs ``route`` (imported on first use)."""
    return importlib.import_module(MODULES[route])
