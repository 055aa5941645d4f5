"""Do two problems share a domain? A verdict with its evidence and its own calibration.

:func:`compare_domains` reads the train and validation splits of both problems and answers
``"same"``, ``"different"`` or ``"undecided"``, with one sentence of reason and every statistic
behind it. The steps:

1. **Schema gate** (:func:`check_schema`): a different modality or sample shape means
   ``"different"`` at once; no test runs.
2. **Labels**: when both tasks are classification, the inputs are compared on a class-matched
   subsample (for every shared label, as many samples from each side), so that label shift and
   unshared classes do not read as domain shift; label shift is tested apart (χ², Cramér's V).
   With no shared label a difference in P(x) cannot be told from the difference in classes:
   ``"undecided"``. Other task pairs compare P(x) directly.
3. **Representation**: flattened inputs through a whitening PCA of
   ``min(64, dims, N // 4)`` components; or the user's ``features`` (e.g. a trunk), standardised
   when they have at most 64 dimensions, else reduced by that PCA. Every comparison (the main
   one and each control) fits its own on its two samples pooled (N of them): the map is then
   the same for every relabelling, so the permutation tests are exact at any sample size. (A
   map fitted on the source alone fits the source's own noise: two draws of one 20-dimensional
   Gaussian at 30 per side read "different" 100 times in 100; benchmarks/domain_null_grid.py.)
4. **Tests** (:mod:`tlroutes.measure.two_sample`): MMD permutation test (RBF, median heuristic)
   and a classifier two-sample test (logistic regression on the features and their squares,
   one sample of each side per fold, so that each fold's classifier learns from all but two
   samples: its AUC grows with them).
5. **Controls**, with the same tests, built the same way: the *null control* compares two
   random halves of the source sample (stratified by class when classes are matched); the
   *positive control* compares one half with the other half under a known shift
   (:data:`POSITIVE_SHIFT`).

Decision rule (``alpha`` default 0.05):

- each test is judged at ``alpha / 2`` (Bonferroni over the two tests, so the chance of a
  significant result on data of one domain is at most ``alpha``);
- effect sizes: MMD² for the MMD test, ``AUC - 0.5`` for the C2ST; each test's threshold is
  ``0.25 * positive`` from the positive control's effect of that test: the null point of
  ``null + 0.25 * (positive - null)`` is the effects' expectation on exchangeable samples, 0
  (``None``, and the test cannot call a difference, when the positive control's effect is not
  above 0). The null control's effects are shown beside, as a check;
- the positive control must be detected (some test with p < ``alpha / 2``), else the tests lack
  power at this sample size: ``"undecided"``, saying how many samples are needed;
- ``"different"`` when some test is significant AND its effect exceeds its threshold; else
  ``"same"``.

The positive control splits the source in halves, so its effects come from half as many samples
per side as the main comparison. MMD² is unbiased, so its expectation does not depend on the
sample size; the C2ST's AUC grows with the samples its classifier learns from, so the control's
(at half the size) leans low, and the threshold with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from tlroutes.measure.sample import held_problem
from tlroutes.measure.two_sample import (
    PCA_COMPONENTS,
    C2STResult,
    LabelShiftResult,
    MMDResult,
    c2st,
    fit_pca,
    label_shift_test,
    median_bandwidth,
    mmd_test,
    squared_distances,
)
from tlroutes.problem import Problem

#: Fewest samples per side (after class matching) for the tests to run: each control half
#: then holds at least 10, two per C2ST fold.
MIN_PER_SIDE = 20
#: User features with more dimensions than this are reduced by a PCA.
#: Images larger than this per side are average-pooled to it before the PCA (see _shrunk).
MAX_IMAGE_SIDE = 32
#: Signals longer than this are average-pooled to it before the PCA.
MAX_SIGNAL_LENGTH = 1024
#: User features with more dimensions than this are reduced by a whitening PCA to this many.
MAX_FEATURE_DIM = PCA_COMPONENTS
#: Measurement seeds behind a domain verdict (see :func:`compare_domains`).
VERDICT_SEEDS = 5
#: How the seeds' verdicts combine.
MAJORITY_RULE = ("majority: the verdict of more than half of the planned seeds ({majority} of "
                 "{planned}); seeds run in order and stop once a verdict has that majority; "
                 "when none has it, undecided (the verdict is split)")
#: The power a sample-size estimate for the positive control aims at.
POWER = 0.8
#: Where the effect threshold sits between the null and the positive control's effects.
THRESHOLD_FRACTION = 0.25
#: The known shift of the positive control, by modality (strengths in the units stated).
POSITIVE_SHIFT: dict[str, str] = {
    "image": "rotation by 20 degrees about the image centre (bilinear, zero fill)",
    "signal": "additive Gaussian noise, sigma = 1.0 x each feature's source std",
    "tabular": "additive Gaussian noise, sigma = 1.0 x each feature's source std",
    "text": "20% of tokens replaced by tokens drawn from the source sample",
}
_ROTATION_DEGREES = 20.0
_NOISE_FRACTION = 1.0
_TOKEN_FRACTION = 0.2


@dataclass
class SchemaCheck:
    """Whether the inputs of two problems can be compared at all."""

    modality: tuple[str, str]
    """Modality of source and target (``"image"``, ``"signal"``, ``"tabular"``, ``"text"``)."""
    shape: tuple[tuple[int, ...], tuple[int, ...]]
    """Shape of one sample on each side."""
    dtype: tuple[str, str]
    """dtype of the train inputs on each side (a dtype difference alone does not block)."""
    comparable: bool
    """False when modality or sample shape differ: the statistical tests are skipped."""
    differences: list[str] = field(default_factory=list)
    """Human-readable differences, empty when the schemas agree."""

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        return {
            "modality": list(self.modality),
            "shape": [list(s) for s in self.shape],
            "dtype": list(self.dtype),
            "comparable": self.comparable,
            "differences": list(self.differences),
        }


def check_schema(a: Problem, b: Problem) -> SchemaCheck:
    """Compare modality, sample shape and input dtype of two problems (``a`` the source)."""
    modality = (a.domain.modality, b.domain.modality)
    shape = (tuple(a.domain.input_shape), tuple(b.domain.input_shape))
    dtype = (str(a.train.x.dtype).replace("torch.", ""), str(b.train.x.dtype).replace("torch.", ""))
    differences = []
    if modality[0] != modality[1]:
        differences.append(f"modality {modality[0]} vs {modality[1]}")
    if shape[0] != shape[1]:
        differences.append(f"sample shape {shape[0]} vs {shape[1]}")
    comparable = not differences
    if dtype[0] != dtype[1]:
        differences.append(f"dtype {dtype[0]} vs {dtype[1]} (compared as float64)")
    return SchemaCheck(modality, shape, dtype, comparable, differences)


@dataclass
class ControlResult:
    """The two tests on a comparison of known answer, built from the source sample."""

    description: str
    """What was compared, with the shift and its strength for the positive control."""
    n_per_side: int
    """Samples in each half."""
    mmd: MMDResult
    """MMD test (in the control's own pooled fit, median-heuristic bandwidth)."""
    c2st: C2STResult
    """Classifier two-sample test."""
    detected: bool
    """Some test has p < alpha / 2."""

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return {
            "description": self.description,
            "n_per_side": self.n_per_side,
            "mmd": self.mmd.to_dict(),
            "c2st": self.c2st.to_dict(),
            "detected": self.detected,
        }


@dataclass
class Threshold:
    """Effect-size thresholds from the positive control: ``fraction * positive``."""

    rule: str
    """The rule in words."""
    mmd2: float | None
    """Threshold on MMD² (None: the positive control's MMD² is not above 0)."""
    auc_excess: float | None
    """Threshold on ``AUC - 0.5`` (None: likewise)."""

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)


@dataclass
class Stability:
    """How the verdict varied over measurement seeds (see :func:`compare_domains`)."""

    seeds: list[int]
    """The measurement seeds run, in order."""
    verdicts: list[str]
    """The verdict each seed reached."""
    shares: dict[str, float]
    """Share of the seeds run that reached each verdict (sums to 1)."""
    planned: int
    """Seeds the rule allows (fewer run once a verdict has the majority)."""
    majority: int
    """Seeds that must agree for a verdict: ``planned // 2 + 1``."""
    rule: str
    """The rule in words."""

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return asdict(self)

    def describe(self) -> str:
        """One line, e.g. ``same 3/3 of seeds 0-2 (majority rule, 3 of 5 needed)``."""
        n = len(self.verdicts)
        shares = ", ".join(f"{v} {round(share * n)}/{n}" for v, share in self.shares.items())
        span = (f"seed {self.seeds[0]}" if n == 1 else
                f"seeds {self.seeds[0]}-{self.seeds[-1]}")
        if n == 1 and self.planned > 1 and self.majority > 1:
            return f"{shares} ({span}; {self.rule})"
        return f"{shares} ({span}; a verdict needs {self.majority} of {self.planned})"


@dataclass
class DomainEvidence:
    """The verdict of :func:`compare_domains` and everything it rests on."""

    verdict: str
    """``"same"``, ``"different"`` or ``"undecided"``."""
    reason: str
    """One sentence for the user."""
    schema: SchemaCheck
    """The schema gate."""
    representation: dict[str, Any] | None = None
    """How inputs became features (kind, dimensions, what it was fitted on: ``"pooled"``, each
    comparison's two samples); None if skipped."""
    n: dict[str, int] = field(default_factory=dict)
    """Samples per side: ``available`` (train + val) and ``used`` (after matching, capping)."""
    matching: str = "none"
    """``"class-matched"``, ``"direct"`` (no labels used) or ``"disjoint-labels"``."""
    mmd: MMDResult | None = None
    """MMD test, source vs target; None when skipped."""
    c2st: C2STResult | None = None
    """Classifier two-sample test, source vs target; None when skipped."""
    label_shift: LabelShiftResult | None = None
    """χ² test of class proportions over shared labels; None unless both are classification."""
    null_control: ControlResult | None = None
    """Random halves of the source sample."""
    positive_control: ControlResult | None = None
    """One source half vs the other half under :data:`POSITIVE_SHIFT`."""
    threshold: Threshold | None = None
    """Effect thresholds from the controls."""
    alpha: float = 0.05
    """Family-wise significance level (each test at ``alpha / 2``)."""
    stability: Stability | None = None
    """Every measurement seed's verdict and how they combined; None for a single measurement."""
    seed_free: bool = False
    """True when the verdict cannot depend on the seed (schema, too few samples, disjoint
    labels): one measurement is enough."""

    def to_dict(self) -> dict:
        """JSON-able dict of every field (skipped parts are None)."""

        def sub(value: Any) -> Any:
            return value.to_dict() if value is not None else None

        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "schema": self.schema.to_dict(),
            "representation": self.representation,
            "n": dict(self.n),
            "matching": self.matching,
            "mmd": sub(self.mmd),
            "c2st": sub(self.c2st),
            "label_shift": sub(self.label_shift),
            "null_control": sub(self.null_control),
            "positive_control": sub(self.positive_control),
            "threshold": sub(self.threshold),
            "alpha": self.alpha,
            "stability": sub(self.stability),
        }


def compare_domains(
    source: Problem,
    target: Problem,
    *,
    features: Callable[[Tensor], Tensor] | None = None,
    alpha: float = 0.05,
    permutations: int = 200,
    max_samples: int = 2000,
    seed: int = 0,
    seeds: int = VERDICT_SEEDS,
) -> DomainEvidence:
    """Decide whether ``source`` and ``target`` share a domain (P(x)), with calibrated evidence.

    Args:
        source, target: the problems; their train and val splits are pooled.
        features: optional map from a batch of inputs ``(N, *input_shape)`` to features
            ``(N, d)`` (e.g. a trained trunk), used instead of the input PCA; default None.
        alpha: family-wise significance level, default 0.05 (each of the two tests at alpha/2).
        permutations: permutations behind each p-value (MMD and C2ST), default 200.
        max_samples: most samples per side (a seeded subsample), default 2000.
        seed: the first measurement seed, default 0; the same seed gives the same evidence.
        seeds: measurement seeds behind the verdict, default :data:`VERDICT_SEEDS` (5): seeds
            ``seed, seed + 1, …`` each draw the subsample, the control halves, the positive
            control's noise and the permutations anew. The verdict is the one that more than
            half of them reach (:data:`MAJORITY_RULE`); seeds stop once a verdict has that
            majority, so a clear case costs ``seeds // 2 + 1`` measurements. 1 = one seed.

    Returns:
        :class:`DomainEvidence`; the decision rule is in this module's docstring. The tests,
        controls and reason shown are those of the first seed that reached the verdict;
        :attr:`DomainEvidence.stability` has every seed's verdict. Never raises for
        incomparable or too few data: those give a verdict with a reason.
    """
    if seeds < 1:
        raise ValueError(f"compare_domains(): seeds must be at least 1, got {seeds}.")
    # Lazily read inputs (an image folder): a seeded subsample read once, in chunks, pooled as
    # the tests pool them (tlroutes.measure.sample); in-memory inputs pass as they are.
    side = MAX_IMAGE_SIDE if features is None else None
    source = held_problem(source, max_samples, seed, max_side=side)
    target = held_problem(target, max_samples, seed, max_side=side)
    majority = seeds // 2 + 1
    runs: list[DomainEvidence] = []
    for k in range(seeds):
        one = _compare_once(source, target, features=features, alpha=alpha,
                            permutations=permutations, max_samples=max_samples, seed=seed + k)
        runs.append(one)
        if one.seed_free:
            break  # schema, too few samples or disjoint labels: every seed says the same
        votes = [r.verdict for r in runs]
        if max(votes.count(v) for v in votes) >= majority:
            break
    votes = [r.verdict for r in runs]
    counts = {v: votes.count(v) for v in ("same", "different", "undecided") if v in votes}
    winner = max(counts, key=lambda v: counts[v])
    if runs[0].seed_free:
        verdict = runs[0].verdict
    else:
        verdict = winner if counts[winner] >= majority else "undecided"
    shown = next((r for r in runs if r.verdict == verdict), runs[0])
    shown.stability = Stability(
        seeds=[seed + k for k in range(len(runs))], verdicts=votes,
        shares={v: c / len(runs) for v, c in counts.items()}, planned=seeds,
        majority=majority,
        rule=MAJORITY_RULE.format(majority=majority, planned=seeds) if not runs[0].seed_free else
        "one seed: this verdict does not depend on the measurement seed",
    )
    if not runs[0].seed_free and counts.get(verdict, 0) < majority:  # split: no majority
        shown.verdict = "undecided"
        split = ", ".join(f"{v} {c}/{len(runs)}" for v, c in counts.items())
        # the undecided seeds' own reason (lack of power) is what to act on, so it follows
        why = next((r.reason for r in runs if r.verdict == "undecided"), "")
        shown.reason = (f"the verdict is split over {len(runs)} measurement seeds ({split}; "
                        f"a verdict needs {majority})" + (f"; {why}" if why else "."))
    return shown


def _compare_once(
    source: Problem,
    target: Problem,
    *,
    features: Callable[[Tensor], Tensor] | None,
    alpha: float,
    permutations: int,
    max_samples: int,
    seed: int,
) -> DomainEvidence:
    """One measurement with one seed (what :func:`compare_domains` repeats over seeds)."""
    schema = check_schema(source, target)
    evidence = DomainEvidence("undecided", "", schema, alpha=alpha)
    if not schema.comparable:
        evidence.verdict = "different"
        evidence.reason = f"schema: {'; '.join(schema.differences)}; no statistical test was run."
        evidence.seed_free = True
        return evidence
    rng = np.random.default_rng(seed)
    x_s, y_s = _pooled(source)
    x_t, y_t = _pooled(target)
    evidence.n = {"source_available": len(x_s), "target_available": len(x_t)}
    # an unlabelled side's targets are placeholders: no class matching, no label-shift test
    both_classification = (source.task.kind == target.task.kind == "classification"
                           and not source.unlabelled and not target.unlabelled)
    groups: np.ndarray | None = None
    shared: list[str] = []
    if both_classification:
        names_s = np.array(source.task.labels)[y_s.numpy()]
        names_t = np.array(target.task.labels)[y_t.numpy()]
        # Labels with samples on both sides: a declared label that no sample carries matches
        # nothing, and two sides that only share declared names share no class.
        shared = [label for label in source.task.labels if label in target.task.labels
                  and bool(np.any(names_s == label)) and bool(np.any(names_t == label))]
    if shared:
        evidence.label_shift = label_shift_test(
            shared,
            [int(np.sum(names_s == label)) for label in shared],
            [int(np.sum(names_t == label)) for label in shared],
        )
        index_s, index_t, groups = _class_matched(names_s, names_t, shared, max_samples, rng)
        evidence.matching = "class-matched"
    else:
        index_s = _cap(len(x_s), max_samples, rng)
        index_t = _cap(len(x_t), max_samples, rng)
        evidence.matching = ("disjoint-labels" if both_classification else
                             "unlabelled" if source.unlabelled or target.unlabelled
                             else "direct")
    x_s, x_t = x_s[torch.from_numpy(index_s)], x_t[torch.from_numpy(index_t)]
    evidence.n.update(source_used=len(x_s), target_used=len(x_t))
    if min(len(x_s), len(x_t)) < MIN_PER_SIDE:
        matched = " after class matching" if evidence.matching == "class-matched" else ""
        evidence.reason = (
            f"too few samples: the tests need at least {MIN_PER_SIDE} per side{matched}, "
            f"but there are {len(x_s)} (source) and {len(x_t)} (target)."
        )
        evidence.seed_free = True
        return evidence

    # Every comparison (the main one and each control) is made in a representation fitted on
    # its own two samples pooled: the map is then the same for every relabelling of the pooled
    # sample, so the permutation p-values are exact at any sample size (see _fit_representation).
    flat = _flattener(features)
    f_s, f_t = flat(x_s), flat(x_t)
    dims = f_s.shape[1] if features is not None else int(np.prod(x_s.shape[1:]))
    pooled_to = (list(_shrunk(x_s[:1]).shape[1:])
                 if features is None and f_s.shape[1] < dims else None)
    represent, evidence.representation = _fit_representation(
        np.concatenate([f_s, f_t]), features is not None, dims, pooled_to)
    z_s, z_t = represent(f_s), represent(f_t)
    seeds = rng.integers(0, 2**31 - 1, size=8)
    # One distance matrix serves the bandwidth and the main MMD test: it is the costliest step,
    # O(N² d).
    pooled = np.concatenate([z_s, z_t])
    d2 = squared_distances(pooled)
    bandwidth = median_bandwidth(pooled, distances=d2)
    evidence.mmd = mmd_test(
        z_s, z_t, permutations=permutations, bandwidth=bandwidth, seed=int(seeds[0]),
        distances=d2,
    )
    evidence.c2st = c2st(z_s, z_t, permutations=permutations, seed=int(seeds[1]))

    half_a, half_b = _halves(len(x_s), groups, rng)
    level = alpha / 2
    modality = source.domain.modality

    def control(description: str, a: np.ndarray, b: np.ndarray, k: int) -> ControlResult:
        # as the main comparison: its own pooled fit, its own median-heuristic bandwidth
        fitted, _ = _fit_representation(np.concatenate([a, b]), features is not None, dims,
                                        pooled_to)
        z_a, z_b = fitted(a), fitted(b)
        mmd = mmd_test(z_a, z_b, permutations=permutations, seed=int(seeds[k]))
        test = c2st(z_a, z_b, permutations=permutations, seed=int(seeds[k + 1]))
        detected = min(mmd.p_value, test.p_value) < level
        return ControlResult(description, len(a), mmd, test, detected)

    evidence.null_control = control(
        "two random halves of the source sample", f_s[half_a], f_s[half_b], 2)
    shifted = _positive_shift(x_s[torch.from_numpy(half_b)], x_s, modality, rng)
    evidence.positive_control = control(
        f"source half vs other source half under {POSITIVE_SHIFT[modality]}",
        f_s[half_a],
        flat(shifted),
        4,
    )
    _decide(evidence, level)
    return evidence


def _decide(evidence: DomainEvidence, level: float) -> None:
    """Fill threshold, verdict and reason from the tests and controls (rule: module doc)."""
    null, positive = evidence.null_control, evidence.positive_control
    assert evidence.mmd and evidence.c2st and null and positive
    effects = {
        "MMD": (evidence.mmd.mmd2, null.mmd.mmd2, positive.mmd.mmd2, evidence.mmd.p_value),
        "C2ST": (
            evidence.c2st.auc - 0.5,
            null.c2st.auc - 0.5,
            positive.c2st.auc - 0.5,
            evidence.c2st.p_value,
        ),
    }
    limits: dict[str, float | None] = {}
    for name, (_, _, known, _) in effects.items():
        # Null point 0: each comparison is made in a representation fitted on its own pooled
        # sample, so its two samples are exchangeable under the null and both effects have
        # expectation 0 there (MMD² is unbiased; a relabelling's out-of-fold AUC is 0.5 on
        # average). The null control's own draw estimates that 0 from half the samples; put in
        # the threshold it only adds noise (and, floored at 0, an upward bias of about 0.4 of
        # its standard deviation): it stays in the evidence, as a check.
        limits[name] = THRESHOLD_FRACTION * known if known > 0 else None
    evidence.threshold = Threshold(
        rule=f"effect > {THRESHOLD_FRACTION} * positive control's effect (the null point is the "
        "effects' expectation on exchangeable samples, 0), per test (MMD²; AUC - 0.5), and "
        "p < alpha/2",
        mmd2=limits["MMD"],
        auc_excess=limits["C2ST"],
    )
    stats = ", ".join(
        f"{name} p={p:.3g} effect={effect:.3g} (threshold "
        f"{'n/a' if limits[name] is None else format(limits[name], '.3g')})"
        for name, (effect, _, _, p) in effects.items()
    )
    flagged = [
        name
        for name, (effect, _, _, p) in effects.items()
        if p < level and limits[name] is not None and effect > limits[name]
    ]
    if evidence.matching == "disjoint-labels":
        evidence.seed_free = True
        evidence.reason = (
            "the two classification tasks share no label, so a difference in P(x) cannot be "
            f"told apart from the difference in classes ({stats})."
        )
    elif not positive.detected:
        evidence.reason = (
            f"too few samples for the positive control: with {positive.n_per_side} per half "
            f"the tests did not detect it ({POSITIVE_SHIFT[evidence.schema.modality[0]]}); "
            f"{_samples_needed(positive, level, evidence.n.get('source_used', 0))}."
        )
    elif flagged:
        evidence.verdict = "different"
        evidence.reason = f"P(x) differs: {' and '.join(flagged)} significant and large ({stats})."
    else:
        evidence.verdict = "same"
        evidence.reason = (
            f"no difference in P(x) beyond the threshold set by the controls ({stats}); the "
            "positive control was detected."
        )


def _samples_needed(positive: ControlResult, level: float, per_side: int) -> str:
    """How many samples per side the positive control would need, in words.

    Each test's z-score, ``Φ⁻¹(1 - p)``, grows about as the square root of the sample size for
    a fixed shift (MMD² and the AUC's excess are estimated with a standard error ~ 1/√n), so
    reaching ``z* = Φ⁻¹(1 - level) + Φ⁻¹(POWER)`` needs about ``n (z* / z)²`` samples, from the
    better of the two tests. The controls use half the source sample per side, so the count
    per side of the comparison is twice the count per half. A rough extrapolation, said so.
    """
    z = max(float(stats.norm.isf(positive.mmd.p_value)),
            float(stats.norm.isf(positive.c2st.p_value)))
    want = float(stats.norm.isf(level) + stats.norm.ppf(POWER))
    if z <= 0.1:
        return (f"the control showed no effect at all, so even the needed size cannot be "
                f"estimated: give several times the {per_side} per side used")
    needed = int(np.ceil(2 * positive.n_per_side * (want / z) ** 2))
    needed = max(needed, per_side + 1)
    return (f"about {needed} per side are needed (now {per_side}; extrapolated from the "
            f"control's z-score {z:.2f} to {want:.2f} for {POWER:.0%} power)")


def _pooled(problem: Problem) -> tuple[Tensor, Tensor]:
    """Train and validation splits joined: inputs and targets."""
    return (
        torch.cat([problem.train.x, problem.val.x]),
        torch.cat([problem.train.y, problem.val.y]),
    )


def _cap(n: int, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random subset of ``range(n)`` of at most ``max_samples`` positions, in random order."""
    return rng.permutation(n)[:max_samples]


def _class_matched(
    names_s: np.ndarray,
    names_t: np.ndarray,
    shared: list[str],
    max_samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every shared label the same number of samples from each side (the smaller count,
    scaled down together when the total exceeds ``max_samples``).

    Returns source positions, target positions and the class index (into ``shared``) of each
    chosen source sample.
    """
    take = np.array([min(np.sum(names_s == c), np.sum(names_t == c)) for c in shared])
    if take.sum() > max_samples:
        take = np.floor(take * max_samples / take.sum()).astype(int)
    chosen_s, chosen_t, groups = [], [], []
    for k, label in enumerate(shared):
        chosen_s.append(rng.permutation(np.flatnonzero(names_s == label))[: take[k]])
        chosen_t.append(rng.permutation(np.flatnonzero(names_t == label))[: take[k]])
        groups.append(np.full(take[k], k))
    return np.concatenate(chosen_s), np.concatenate(chosen_t), np.concatenate(groups)


def _halves(
    n: int, groups: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of ``range(n)``, stratified by ``groups`` when given."""
    order = rng.permutation(n)
    if groups is not None:
        # a stable sort by class keeps the random order inside each class; dealing alternately
        # then gives each half the same class counts (within one per class)
        order = order[np.argsort(groups[order], kind="stable")]
    half = n // 2
    return np.sort(order[0 : 2 * half : 2]), np.sort(order[1 : 2 * half : 2])


def _flattener(features: Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], np.ndarray]:
    """Inputs ``(N, *shape)`` to float64 rows ``(N, D)``: the user's ``features`` when given,
    else the inputs themselves, flattened (large images and long signals pooled first,
    :func:`_shrunk`)."""

    def flat(x: Tensor) -> np.ndarray:
        if features is None:
            return _shrunk(x).reshape(len(x), -1).double().numpy()
        with torch.no_grad():
            out = features(x)
        return out.detach().reshape(len(x), -1).double().cpu().numpy()

    return flat


def _fit_representation(
    pooled: np.ndarray, user_features: bool, dims: int, pooled_to: list[int] | None
) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """The map from flattened inputs (or user features) to the test features, fitted on the
    two compared samples pooled, ``pooled`` ``(N, D)``.

    User features of at most :data:`MAX_FEATURE_DIM` dimensions are standardised; anything
    else goes through a whitening PCA of ``min(PCA_COMPONENTS, D, N // 4)`` components.

    Why pooled: a two-sample permutation test is exact at any sample size when the statistic of
    every relabelling of the pooled sample is computed the same way. A map fitted on the pooled
    sample is the same for every relabelling; one fitted on the source alone is not: it fits the
    source's own noise, so that an independent draw of the same distribution reads as different.
    Whitened on n source samples in d dimensions, the source's weakest sample direction has
    about ``(1 - sqrt(d / n))²`` of the true variance (the Marchenko–Pastur edge), so a new draw
    reads ``1 / (1 - sqrt(d / n))²`` times as wide there as the source: 7x at d = 20, n = 50;
    two draws of N(0, I_20) read "different" 100 times in 100 at 20 to 100 per side
    (benchmarks/domain_null_grid.py). Pooled, the cap on components guards cost only.
    """
    kind = "pca" if not user_features else "features+pca"
    if user_features and dims <= MAX_FEATURE_DIM:
        mean, std = pooled.mean(axis=0), pooled.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        info = {"kind": "features", "input_dims": dims, "dims": dims,
                "scaling": "standardised", "fitted_on": "pooled"}
        return (lambda f: (f - mean) / std), info
    # At most a quarter as many components as samples: whitened from N samples, the k sample
    # variances spread about the true ones by (1 ± sqrt(k / N))² (Marchenko–Pastur), and as k
    # nears N the whitened sample becomes a regular simplex with nothing left to test; at
    # k = N / 4 the spread stays within [1/4, 9/4]. (A chosen bound, not a derived optimum.)
    pca = fit_pca(pooled, max(1, min(PCA_COMPONENTS, len(pooled) // 4)))
    info = {
        "kind": kind,
        "input_dims": dims,
        **({"pooled_to": pooled_to} if pooled_to is not None else {}),
        "dims": int(pca.components.shape[0]),
        "scaling": "whitened",
        "fitted_on": "pooled",
    }
    return pca.transform, info


def _shrunk(x: Tensor) -> Tensor:
    """Large images average-pooled to at most :data:`MAX_IMAGE_SIDE` per side, long signals to
    :data:`MAX_SIGNAL_LENGTH`; other inputs as they are.

    Why: the PCA costs O(n² d); at 224 × 224 × 3 inputs and 2,000 samples that is about a
    minute per seed, and every run now measures its pair. A 32 × 32 average keeps what the
    shifts a domain test looks for change (rotation, colour, blur, contrast, scale).
    """
    if not x.is_floating_point():
        return x
    if x.dim() == 4 and max(x.shape[-2:]) > MAX_IMAGE_SIDE:
        size = (min(x.shape[-2], MAX_IMAGE_SIDE), min(x.shape[-1], MAX_IMAGE_SIDE))
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), size)
    if x.dim() == 3 and x.shape[-1] > MAX_SIGNAL_LENGTH:
        return torch.nn.functional.adaptive_avg_pool1d(x.float(), MAX_SIGNAL_LENGTH)
    return x


def _positive_shift(
    x: Tensor, reference: Tensor, modality: str, rng: np.random.Generator
) -> Tensor:
    """Apply the positive control's known shift (:data:`POSITIVE_SHIFT`) to inputs ``x``;
    ``reference`` (the source sample) sets the noise scale and the token pool."""
    if modality == "image" and x.dim() == 4 and x.is_floating_point():
        from tlroutes.data.shifts import rotate

        return rotate(x, _ROTATION_DEGREES)
    if modality == "text" or not x.is_floating_point():
        pool = reference.reshape(-1).numpy()
        tokens = x.reshape(-1).numpy().copy()
        swap = rng.random(tokens.size) < _TOKEN_FRACTION
        tokens[swap] = rng.choice(pool, size=int(swap.sum()))
        return torch.from_numpy(tokens).reshape(x.shape)
    std = reference.double().std(dim=0)
    noise = torch.from_numpy(rng.normal(size=tuple(x.shape)))
    return (x.double() + _NOISE_FRACTION * std * noise).to(x.dtype)
