"""``tlroutes plan``: what a run file declares, combined with what is measured, names a route.

Each of the cube's three axes gets a value and says where it came from:

- **task**: measured — the kinds of the tasks (the cube's task axis is the kind; label sets are
  reported beside it). For several problems the axis is "same" only when every pair agrees.
- **domain**: a data block's explicit ``domain:`` name is a declaration and wins; measurement
  that disagrees with it is a warning. Otherwise the measured verdict decides; when the
  measurement is undecided (too few samples, or label sets that confound P(x) with the classes)
  the run file's data names decide, and the plan says so. The rule is
  :func:`tlroutes.measure.placement.place`'s, the same one a route's ``run`` checks its cell
  with, so a route the plan names is never refused by the run.
- **order**: the run file's ``order:``; else its constraints (``constraints.source_data: false`` —
  only a pretrained model is available — means sequential; ``constraints.one_model: true`` — one
  model must serve both problems — means simultaneous); else the declared route's order; else
  the run file's shape (``problems:`` or jobs → simultaneous, ``source``/``target`` →
  sequential). An order that contradicts the constraints is an error.

The plan warns wherever the declared route and the measured one differ, and recommends a recipe
for the planned route with a reason per setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from tlroutes.config import RunLike, RunSpec, as_run_spec
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route, importance_text, route_for
from tlroutes.measure.display import evidence_tables, verdict_text
from tlroutes.measure.domain import VERDICT_SEEDS
from tlroutes.measure.evidence import (
    Evidence,
    FeatureFn,
    PairEvidence,
    inspect,
    run_problems,
)
from tlroutes.measure.placement import Axis, Placement, placement_of, route_disagreement
from tlroutes.problem import Problem
from tlroutes.routes.registry import get_route

__all__ = ["Axis", "Plan", "plan", "plan_order", "plan_tables", "recommend"]


@dataclass
class Plan:
    """What ``tlroutes plan`` concludes."""

    route: Route
    """The route the axes place the project on."""
    task: Axis
    """The task axis."""
    domain: Axis
    """The domain axis."""
    order: Axis
    """The order axis."""
    declared_route: Route | None
    """The run file's ``route:``, or None for ``route: auto``."""
    recipe: dict[str, Any]
    """Recommended ``recipe:`` settings for :attr:`route`."""
    reasons: dict[str, str]
    """Why each recommended setting, by key."""
    warnings: list[str] = field(default_factory=list)
    """Where declaration and measurement disagree, and other cautions."""
    evidence: Evidence | None = None
    """The measurements behind the plan."""
    placements: list[Placement] = field(default_factory=list)
    """Each pair's placement (:func:`tlroutes.measure.placement.place`); a ``route: auto`` run
    follows them (:func:`tlroutes.measure.placement.following`)."""
    importance: dict[str, str] = field(default_factory=dict)
    """The fourth axis: each problem's ``main`` | ``auxiliary`` from the run file's
    ``importance:`` (problems not named are auxiliary), or {} when the tasks are equal."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``tlroutes plan`` writes as plan.json)."""
        return {
            "route": self.route.value, "route_title": self.route.title,
            "declared_route": None if self.declared_route is None else self.declared_route.value,
            "axes": {name: vars(getattr(self, name)) for name in ("task", "domain", "order")},
            "importance": self.importance or "equal",
            "recipe": self.recipe, "reasons": self.reasons, "warnings": self.warnings,
            "evidence": None if self.evidence is None else self.evidence.to_dict(),
        }


def plan(
    spec: RunLike,
    *,
    seed: int | None = None,
    alpha: float = 0.05,
    permutations: int = 200,
    max_samples: int = 2000,
    seeds: int = VERDICT_SEEDS,
    candidates: Mapping[str, FeatureFn] | None = None,
    source_heads: Mapping[str, FeatureFn] | None = None,
    source_model: FeatureFn | None = None,
) -> Plan:
    """Place a run file on the cube from its declarations and measurements of its data.

    Args:
        spec: a :class:`RunSpec`, a run file's path or its content as a dict; ``route: auto``
            leaves the route to the plan.
        seed: seed of the measurements. Default: the run file's seed.
        alpha: significance level of the domain tests. Default 0.05.
        permutations: permutations of the MMD test. Default 200.
        max_samples: samples per side used by the domain tests. Default 2000.
        seeds: measurement seeds behind each domain verdict (majority). Default 5.
        candidates, source_heads, source_model: trunks to rank and source heads/model for
            LEEP and NCE, as for :func:`tlroutes.measure.evidence.inspect`. Default none.
    """
    spec = as_run_spec(spec)
    # Through the registry: a plug-in route name places the run on its cell.
    declared = None if spec.route == "auto" else get_route(spec.route).ROUTE
    order = plan_order(spec, declared)
    notes: list[str] = []
    problems = run_problems(spec, notes)
    warnings: list[str] = list(notes)
    if len(problems) < 2:
        return _without_pair(spec, declared, order, warnings)
    evidence = inspect(spec, seed=spec.seed if seed is None else seed, alpha=alpha,
                       permutations=permutations, max_samples=max_samples, seeds=seeds,
                       candidates=candidates, source_heads=source_heads,
                       source_model=source_model)
    placements = [placement_of(p, problems[p.first], problems[p.second])
                  for p in evidence.pairs]
    task = _task_axis(evidence.pairs, order.value)
    domain = _domain_axis(placements, warnings)
    route = route_for(task=task.value, domain=domain.value, order=order.value)
    if declared is not None and declared is not route:
        warnings.insert(0, route_disagreement(declared, task.value, domain.value, order.value,
                                              route))
    if len(evidence.pairs) > 1:
        warnings.extend(_pair_notes(evidence.pairs, route, order.value))
    recipe, reasons = recommend(route, problems, evidence, warnings)
    importance = _importance(spec, route, recipe, reasons, warnings)
    return Plan(route, task, domain, order, declared, recipe, reasons, warnings, evidence,
                placements, importance=importance)


def _importance(spec: RunSpec, route: Route, recipe: dict[str, Any], reasons: dict[str, str],
                warnings: list[str]) -> dict[str, str]:
    """The importance axis of every problem, and the route's advice for it (its module's
    ``recommend_importance``, when it has one; a route without one is warned about)."""
    main = spec.main_task
    if main is None:
        return {}
    importance = {n: ("main" if n == main else "auxiliary") for n in spec.problems}
    advise = getattr(get_route(route), "recommend_importance", None)
    if advise is None:
        warnings.append(f"importance: names a main task, but {route.title} treats its problems "
                        "as equally important; Multi-Task Learning is the route that serves "
                        "a main task with auxiliary ones.")
    else:
        extra, why = advise(main, [n for n in importance if n != main])
        recipe.update(extra)
        reasons.update(why)
    return importance


def plan_order(spec: RunSpec, declared: Route | None) -> Axis:
    """The order axis from the run file (see the module doc); contradictions are errors."""
    c = spec.constraints
    no_source = spec.source is None or not c.source_data
    needs = None
    if no_source and c.one_model:
        raise ConfigError(
            "constraints.one_model: true needs the source data to train one model on both "
            "problems, but the source data is not available (source: null or "
            "constraints.source_data: false). Drop one of the two.")
    if no_source:
        needs = ("sequential", "only a pretrained model is available (no source data), so "
                 "knowledge can only be carried over after it was learned")
    elif c.one_model:
        needs = ("simultaneous", "one model must serve both problems, so both are learned at "
                 "once")
    said = spec.order or (declared.order if declared else None)
    if needs and said and said != needs[0]:
        what = "order:" if spec.order else f"route: {declared.value}"
        raise ConfigError(
            f"The run file's {what} means {said}, but its constraints say {needs[0]}: "
            f"{needs[1]}. Change the order (or the route), or the constraints.")
    if spec.order:
        return Axis(spec.order, "declared", f"The run file says order: {spec.order}.")
    if needs:
        return Axis(needs[0], "constraints", needs[1][0].upper() + needs[1][1:] + ".")
    if declared is not None:
        return Axis(declared.order, "route", f"The declared route {declared.title} is "
                    f"{declared.order}.")
    shape = "simultaneous" if spec.problems or spec.recipe.get("jobs") else "sequential"
    return Axis(shape, "shape", "The run file gives " + (
        "problems learned together." if shape == "simultaneous" else "a source and a target."))


def _task_axis(pairs: list[PairEvidence], order: str) -> Axis:
    """'same' when every pair's tasks are of one kind; learned at once, two classification
    tasks with disjoint label sets are 'different' too: one head cannot serve both (merging
    them would give the same inputs conflicting labels), so each needs its own head."""
    def reason(p: PairEvidence) -> str:
        if disjoint_at_once(p):
            return (f"{p.task.reason.rstrip('.')}; but their label sets are disjoint and they "
                    "are learned at once, so each needs a head of its own: different tasks.")
        return p.task.reason

    def disjoint_at_once(p: PairEvidence) -> bool:
        return (order == "simultaneous" and p.task.verdict == "same"
                and p.task.label_relation == "disjoint")

    differ = [p for p in pairs if p.task.verdict != "same" or disjoint_at_once(p)]
    shown = differ or pairs
    value = "different" if differ else "same"
    if len(pairs) == 1:
        return Axis(value, "measured", reason(pairs[0]))
    return Axis(value, "measured", "; ".join(
        f"{p.first} vs {p.second}: {reason(p).rstrip('.')}" for p in shown))


def _pair_notes(pairs: list[PairEvidence], route: Route, order: str) -> list[str]:
    """For three or more problems: pairs whose own cell shares more than the set's route."""
    notes = []
    for p in pairs:
        domain = p.domain.verdict if p.domain.verdict in ("same", "different") else None
        if domain is None:
            continue
        own = route_for(task=p.task.verdict, domain=domain, order=order)
        # One head for two classification tasks needs shared labels, which disjoint sets lack.
        if own.task == "same" and p.task.label_relation == "disjoint":
            continue
        if own is not route and (own.task == "same" or own.domain == "same"):
            notes.append(f"'{p.first}' and '{p.second}' alone sit on {own.title} (task "
                         f"{p.task.verdict}, domain {domain}): they could share more than "
                         f"{route.title} lets them.")
    return notes


def _domain_axis(placements: list[Placement], warnings: list[str]) -> Axis:
    """The domain axis over every pair: 'same' only when every pair is (each pair placed by
    :func:`tlroutes.measure.placement.placement_of`, whose warnings join the plan's)."""
    values, sources, details = [], [], []
    for placed in placements:
        warnings.extend(placed.warnings)
        values.append(placed.domain.value)
        sources.append(placed.domain.source)
        details.append(f"{placed.first} vs {placed.second}: {placed.domain.detail.rstrip('.')}")
    value = "same" if all(v == "same" for v in values) else "different"
    source = "measured" if all(s == "measured" for s in sources) else (
        "declared" if all(s == "declared" for s in sources) else "measured and declared")
    return Axis(value, source, "; ".join(details))


def _without_pair(spec: RunSpec, declared: Route | None, order: Axis,
                  warnings: list[str]) -> Plan:
    """A source-less run: the pretrained trunk is the source; axes come from the declaration."""
    if declared is None:
        raise ConfigError(
            "route: auto needs two problems to measure, but this run file has only a target "
            "(source: null). Name the route, e.g. task_fine_tuning for a pretrained trunk.")
    task = Axis(declared.task, "declared", f"Declared by route: {declared.value}.")
    domain = Axis(declared.domain, "declared", f"Declared by route: {declared.value}.")
    recipe, reasons = recommend(declared, run_problems(spec), None, warnings)
    return Plan(declared, task, domain, order, declared, recipe, reasons, warnings, None)


def recommend(route: Route, problems: dict[str, Problem], evidence: Evidence | None,
              warnings: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Recommended recipe settings for ``route`` given the problems, with a reason for each.

    The advice is the route's own (its module's ``recommend``, found through the route
    registry); this function only dispatches, so the planner names no route.

    Args:
        route: the planned route.
        problems: the run's problems by name; for sequential routes the last is the target.
        evidence: the measurements, or ``None`` for a source-less run.
        warnings: the plan's cautions; a route may append to it.

    Returns:
        ``(recipe, reasons)``: recommended ``recipe:`` settings and one sentence per key.
    """
    return get_route(route).recommend(problems, evidence, warnings)


def plan_tables(plan: Plan) -> list[Table]:
    """The axes with their sources, the recommended recipe, and the warnings."""
    axes = Table(title=f"plan: {plan.route.title}", title_justify="left")
    axes.add_column("axis")
    axes.add_column("value")
    axes.add_column("from")
    axes.add_column("why", overflow="fold")
    for name in ("task", "domain", "order"):
        axis = getattr(plan, name)
        axes.add_row(name, verdict_text(axis.value), axis.source, axis.detail)
    if plan.importance:
        axes.add_row("importance", importance_text(plan.importance), "declared",
                     "The run file's importance: names the main task; the others serve it "
                     "(selection, metric and baseline are the main task's).")
    recipe = Table(title="recommended recipe", title_justify="left")
    recipe.add_column("setting")
    recipe.add_column("value")
    recipe.add_column("why", overflow="fold")
    for key, value in plan.recipe.items():
        recipe.add_row(key, str(value), plan.reasons.get(key, ""))
    tables = [axes, recipe]
    if plan.warnings:
        warn = Table(title="warnings", title_justify="left", show_header=False)
        warn.add_column("warning", overflow="fold", style="yellow")
        for text in plan.warnings:
            warn.add_row(text)
        tables.append(warn)
    if plan.evidence is not None:
        tables.extend(evidence_tables(plan.evidence))
    return tables
