"""One placement of two problems on the cube's task and domain axes, for plan and run alike.

``tlroutes plan`` (:mod:`tlroutes.planner`) and every route's check that its problems fit its
cell (:func:`tlroutes.routes.common.require_fit`) call :func:`place`, so a route that ``plan``
names is never refused by ``run``. The rule, per pair of problems:

- **task**: the kinds (classification / multilabel / regression); "same" when they agree. A
  fact of the run file, never in doubt.
- **domain**: a data block's explicit ``domain:`` name is a declaration and wins (two blocks
  are one domain when their names, modality and sample shape agree); a measurement that
  disagrees is a warning. Otherwise the measured verdict (:func:`compare_domains`, several
  seeds) decides, and data names that disagree are a warning. When the measurement is
  undecided (too few samples, or label sets that confound P(x) with the classes) the data names
  decide, and the detail says so.

The measurement is cached by the problems' content (train and validation inputs and targets,
the task and the domain's modality and shape — not their names), so a ``route: auto`` run
measures once: ``plan`` measures while the run file is resolved, and the route's own check
finds that result. Problems loaded again from the same files or the same built-in generator and
seed hash alike.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from tlroutes.lazy_inputs import LazyInputs
from tlroutes.matrix import Route
from tlroutes.measure.domain import (
    VERDICT_SEEDS,
    DomainEvidence,
    compare_domains,
)
from tlroutes.measure.sample import sampled_split
from tlroutes.measure.task import TaskEvidence, compare_tasks
from tlroutes.problem import Problem

FeatureFn = Callable[[Tensor], Tensor]

#: How many pair measurements the cache keeps (least recently used dropped first).
CACHE_SIZE = 32


@dataclass
class Axis:
    """One axis of the cube as placed."""

    value: str
    """'same'/'different' (task, domain) or 'sequential'/'simultaneous' (order)."""
    source: str
    """Where the value came from: 'measured', 'declared', 'constraints', 'route', 'shape'."""
    detail: str
    """One sentence a user reads: the evidence or the declaration behind the value."""


@dataclass
class PairEvidence:
    """How two problems relate: the domain test and the task comparison."""

    first: str
    """Name of the first problem (the source, for a sequential pair)."""
    second: str
    """Name of the second problem (the target)."""
    domain: DomainEvidence
    """Schema gate, two-sample tests, controls, the verdict's spread over seeds."""
    task: TaskEvidence
    """Task kinds, the label relation of the classes present, and the task verdict."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"first": self.first, "second": self.second,
                "domain": self.domain.to_dict(), "task": self.task.to_dict()}


@dataclass
class Placement:
    """Where :func:`place` puts two problems: the task and domain axes, with their evidence."""

    first: str
    """The first problem's name (the source)."""
    second: str
    """The second problem's name (the target)."""
    task: Axis
    """The task axis: always from the task kinds."""
    domain: Axis
    """The domain axis: declared, measured, or the data names when measurement is undecided."""
    domain_certain: bool
    """True when the domain value cannot be a measurement's error: a different modality or
    sample shape (the schema gate), or an explicit ``domain:`` declaration."""
    evidence: PairEvidence
    """The measurements behind it (the label relation of the classes present is
    ``evidence.task.labels``)."""
    warnings: list[str] = field(default_factory=list)
    """Where declaration, data names and measurement disagree (the same words in plan and run)."""


def place(
    first: Problem,
    second: Problem,
    *,
    seed: int | None = None,
    alpha: float = 0.05,
    permutations: int = 200,
    max_samples: int = 2000,
    seeds: int = VERDICT_SEEDS,
    features: FeatureFn | None = None,
    source_model: FeatureFn | None = None,
    names: tuple[str, str] | None = None,
) -> Placement:
    """Place two problems on the task and domain axes (rule: module doc).

    Args:
        first, second: the problems (source and target for a sequential pair).
        seed: the first measurement seed. Default None: reuse the measurement of these
            problems' content if one was made with any seed (plan's, during ``route: auto``),
            else seed 0.
        alpha, permutations, max_samples, seeds, features: as for :func:`compare_domains`.
            Defaults 0.05, 200, 2000, :data:`VERDICT_SEEDS` and None (input PCA).
        source_model: for the task comparison's NCE, as for :func:`compare_tasks`. Default None.
        names: what to call the two problems in the warnings and the evidence, e.g. their
            roles in the run file (``("source", "target")``, as ``plan`` names them, so that
            plan and run word a warning alike). Default: the problems' own names.
    """
    if names is not None and names in _FOLLOWED:
        _LAST[:] = [_FOLLOWED[names]]
        return _FOLLOWED[names]
    if names is not None:
        first, second = _named(first, names[0]), _named(second, names[1])
    pair = measure_pair(first, second, seed=seed, alpha=alpha, permutations=permutations,
                        max_samples=max_samples, seeds=seeds, features=features,
                        source_model=source_model)
    placed = placement_of(pair, first, second)
    _LAST[:] = [placed]
    return placed


def last_placement() -> Placement | None:
    """The placement :func:`place` made last in this process, or None after
    :func:`forget_last_placement`. The runner reads it after a route ran (the route placed its
    own problems) to put the label relation in the summary without loading the data again."""
    return _LAST[0] if _LAST else None


def forget_last_placement() -> None:
    """Forget the last placement (the runner calls it before each route run)."""
    _LAST.clear()


_LAST: list[Placement] = []
# pair names -> the placement a plan made, while a planned run follows its plan
_FOLLOWED: dict[tuple[str, str], Placement] = {}


@contextmanager
def following(placements: list[Placement]) -> Iterator[None]:
    """Within the block, :func:`place` asked about a pair by the names a plan gave it returns
    the plan's placement instead of measuring.

    A ``route: auto`` run follows its plan this way: with ``seeds: k`` each seed loads its own
    draw of the data, and a borderline pair measured again could land in another cell than the
    one the plan named; the run must never refuse its own plan.
    """
    saved = dict(_FOLLOWED)
    _FOLLOWED.update({(p.first, p.second): p for p in placements})
    try:
        yield
    finally:
        _FOLLOWED.clear()
        _FOLLOWED.update(saved)


def placement_of(pair: PairEvidence, first: Problem, second: Problem) -> Placement:
    """The placement that ``pair`` (measured on ``first`` and ``second``) gives."""
    task = Axis(pair.task.verdict, "measured", pair.task.reason)
    warnings: list[str] = []
    named = "same" if same_named_domain(first, second) else "different"
    measured = pair.domain.verdict
    a, b = pair.first, pair.second
    declared = declared_domain(first) is not None or declared_domain(second) is not None
    schema = not pair.domain.schema.comparable
    if declared and not schema:
        domain = Axis(named, "declared", f"'{a}' and '{b}' are declared {named} domain(s) by "
                      "`domain:`")
        if measured in ("same", "different") and measured != named:
            warnings.append(
                f"'{a}' and '{b}' are declared one domain, but the tests say {measured}: "
                f"{pair.domain.reason}" if named == "same" else
                f"'{a}' and '{b}' are declared different domains, but the tests say same: "
                f"{pair.domain.reason}")
    elif measured in ("same", "different"):
        domain = Axis(measured, "measured", pair.domain.reason)
        if measured != named and not schema:
            warnings.append(
                f"'{a}' and '{b}': the run file's data names suggest {named} domains, "
                f"measurement says {measured}; the plan follows the measurement. Set `domain:` "
                "in the data blocks to declare otherwise.")
    else:
        domain = Axis(named, "declared", f"measurement undecided ({pair.domain.reason.rstrip('.')}"
                      f"); the run file's data names say {named}")
    return Placement(a, b, task, domain, domain_certain=schema or declared, evidence=pair,
                     warnings=warnings)


def route_disagreement(declared: Route, task: str, domain: str, order: str,
                       placed: Route) -> str:
    """The one sentence plan and run both use when a declared route is not the placed one."""
    return (f"The run file declares {declared.title}, but the measured axes (task {task}, "
            f"domain {domain}, order {order}) place it on {placed.title}.")


def declared_domain(problem: Problem) -> str | None:
    """The ``domain:`` name a run file declared for ``problem`` (see
    :func:`tlroutes.data.load.load_problem`), or None when it declared none."""
    value = problem.meta.get("declared_domain")
    return None if value is None else str(value)


def same_named_domain(a: Problem, b: Problem) -> bool:
    """True when the two domains agree by name, modality and sample shape."""
    da, db = a.domain, b.domain
    return (da.name, da.modality, da.input_shape) == (db.name, db.modality, db.input_shape)


# --------------------------------------------------------------------------------------------
# The measurement, cached by content
# --------------------------------------------------------------------------------------------

# content key + settings -> {seed: PairEvidence}; least recently used first
_CACHE: OrderedDict[tuple, dict[int, PairEvidence]] = OrderedDict()


def measure_pair(
    first: Problem,
    second: Problem,
    *,
    seed: int | None = 0,
    alpha: float = 0.05,
    permutations: int = 200,
    max_samples: int = 2000,
    seeds: int = VERDICT_SEEDS,
    features: FeatureFn | None = None,
    source_model: FeatureFn | None = None,
) -> PairEvidence:
    """The domain and task evidence of a pair, measured once per content and settings.

    ``seed`` None reuses a measurement made with any seed (else measures with seed 0). With
    ``features`` or ``source_model`` (functions, which cannot be hashed by what they compute)
    nothing is cached. Arguments otherwise as for :func:`place`.
    """
    cacheable = features is None and source_model is None
    key = (content_key(first), content_key(second), alpha, permutations, max_samples, seeds)
    if cacheable and key in _CACHE:
        _CACHE.move_to_end(key)
        by_seed = _CACHE[key]
        hit = by_seed.get(seed) if seed is not None else next(iter(by_seed.values()))
        if hit is not None:
            return _renamed(hit, first, second)
    used = 0 if seed is None else seed
    domain = compare_domains(first, second, features=features, alpha=alpha,
                             permutations=permutations, max_samples=max_samples, seed=used,
                             seeds=seeds)
    # a source model reads a seeded subsample of the target's lazily read inputs, at full size
    target = second if source_model is None or not second.train.is_lazy else replace(
        second, train=sampled_split(second.train, max_samples, used))
    pair = PairEvidence(first.name, second.name, domain,
                        compare_tasks(first, target, source_model=source_model))
    if cacheable:
        _CACHE.setdefault(key, {})[used] = pair
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return pair


def clear_cache() -> None:
    """Forget every cached measurement (tests; or after data changed in place)."""
    _CACHE.clear()


def content_key(problem: Problem) -> str:
    """A digest of what the measurement reads: train and validation inputs and targets, every
    split's targets (for the classes present), the task and the domain's modality and shape.

    The names are left out on purpose: the same data loaded under another name (a route loads
    ``digits/digit`` where plan named it ``source``) is the same measurement.
    """
    digest = hashlib.blake2b(digest_size=16)
    task, domain = problem.task, problem.domain
    digest.update(repr((task.kind, task.labels, domain.modality, domain.input_shape)).encode())
    for tensor in (problem.train.x, problem.val.x, problem.train.y, problem.val.y,
                   problem.test.y):
        if isinstance(tensor, LazyInputs):
            # read on demand: digest which samples of which source, not their pixels (reading
            # every image to key a cache would cost what the cache saves)
            rows = tensor.index if tensor.index is not None else torch.arange(len(tensor))
            source = getattr(tensor.reader, "paths", None) or id(tensor.reader)
            digest.update(repr((tensor.shape, source)).encode())
            tensor = rows
        t = tensor.detach().cpu().contiguous()
        digest.update(repr((str(t.dtype), tuple(t.shape))).encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _named(problem: Problem, name: str) -> Problem:
    """``problem`` under another name (a shallow copy: the data is shared, not copied)."""
    return problem if problem.name == name else replace(problem, name=name)


def _renamed(pair: PairEvidence, first: Problem, second: Problem) -> PairEvidence:
    """``pair`` under the names of the problems asked about (the cache ignores names)."""
    if (pair.first, pair.second) == (first.name, second.name):
        return pair
    return replace(pair, first=first.name, second=second.name,
                   task=replace(pair.task, source=first.name, target=second.name))
