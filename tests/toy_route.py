"""A plug-in route for the registry tests: one module, registered in one line.

It trains nothing: ``run`` reports fixed metrics scaled by its recipe, so the tests see exactly
what travelled from the run file through the runner, summary.json and the report.
"""

from __future__ import annotations

from pydantic import Field

from tlroutes.config import RunSpec
from tlroutes.matrix import Route
from tlroutes.reporting.collect import RunData
from tlroutes.reporting.details import details_blocks
from tlroutes.reporting.document import Block, Text
from tlroutes.routes.common import RecipeSpec, summarise
from tlroutes.routes.registry import RouteProse, Sharing
from tlroutes.summary import Summary
from tlroutes.train.engine import Trainer

ROUTE = Route.TASK_FINE_TUNING
TITLE = "Toy Fine-Tuning"


class Recipe(RecipeSpec):
    """Toy settings."""

    scale: float = Field(1.0, gt=0, description="Multiplies the reported accuracy. Default 1.")


def run(spec: RunSpec, recipe: Recipe, trainer: Trainer) -> Summary:
    """Report accuracy ``0.5 * scale`` (plus 0.01 per seed) against a baseline of 0.4."""
    accuracy = 0.5 * recipe.scale + 0.01 * spec.seed
    return summarise(ROUTE, None, {"accuracy": accuracy}, {"accuracy": 0.4},
                     primary=("accuracy", True), carried_over="nothing (a toy)",
                     baseline_kind="scratch",
                     baselines={"scratch": {"accuracy": 0.4},
                                "other": {"accuracy": 0.3 + 0.1 * spec.seed}},
                     toy_scale=recipe.scale)


def report_blocks(run: RunData, *, tsne: bool = True) -> list[Block]:
    """A sentence of its own, then the generic details."""
    scale = run.summary.details["toy_scale"] if run.summary else "?"
    return [Text(f"The toy route's own section: scale {scale}.")] + details_blocks(
        run, shown={"toy_scale"})


def recommend(problems, evidence, warnings):
    """No advice."""
    return {}, {}


PROSE = RouteProse("A toy recipe in the Task Fine-Tuning cell, for tests.", "nothing → nothing",
                   Sharing(stems="none", trunk="none", heads="none", stages="none"))
