"""Tests of the domain measurement: raw two-sample tests, the verdict, and its calibration."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch
from scipy import stats

from tlroutes.data.builtin import load_builtin
from tlroutes.measure.domain import MIN_PER_SIDE, check_schema, compare_domains
from tlroutes.measure.two_sample import (
    _out_of_fold_scores,
    c2st,
    label_shift_test,
    mmd_test,
    stratified_folds,
    unbiased_mmd2,
)
from tlroutes.problem import Domain, Problem, Split, Task


def make_problem(x: torch.Tensor, y: torch.Tensor, task: Task, domain: Domain) -> Problem:
    """All but the last two samples as train, the last two as val (compare_domains pools both)."""
    return Problem(
        "p", task, domain, Split(x[:-2], y[:-2]), Split(x[-2:], y[-2:]), Split(x[-2:], y[-2:])
    )


def everything(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    splits = problem.splits().values()
    return torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits])


# ------------------------------------------------------------------------------------------
# MMD
# ------------------------------------------------------------------------------------------


def test_unbiased_mmd_equals_double_loop() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 2)), rng.normal(size=(5, 2)) + 0.7
    sigma = 1.3

    def k(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.exp(-np.sum((u - v) ** 2) / (2 * sigma**2)))

    xx = sum(k(a[i], a[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    yy = sum(k(b[i], b[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(a[i], b[j]) for i in range(4) for j in range(5)) / (4 * 5)
    result = mmd_test(a, b, bandwidth=sigma, permutations=10)
    assert result.mmd2 == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    # the vectorised form gives the same for a relabelling given as a mask
    z = np.concatenate([b, a])
    kernel = np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * sigma**2))
    mask = np.array([False] * 5 + [True] * 4)
    assert float(unbiased_mmd2(kernel, mask)) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_mmd_p_value_small_for_shifted_gaussians_and_not_for_equal_ones() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(100, 5))
    shifted = mmd_test(a, rng.normal(size=(100, 5)) + 0.5, permutations=200, seed=0)
    assert shifted.p_value == pytest.approx(1 / 201)
    assert shifted.mmd2 > 0.01
    same = mmd_test(a, rng.normal(size=(100, 5)), permutations=200, seed=0)
    assert same.p_value > 0.05


def test_mmd_false_positive_rate_under_the_null() -> None:
    rng = np.random.default_rng(3)
    p_values = np.array(
        [
            mmd_test(
                rng.normal(size=(40, 3)), rng.normal(size=(40, 3)), permutations=100, seed=t
            ).p_value
            for t in range(200)
        ]
    )
    rate = float(np.mean(p_values < 0.05))
    assert 0.01 <= rate <= 0.10, rate
    # roughly uniform: about half below 0.5
    assert 0.35 <= float(np.mean(p_values < 0.5)) <= 0.65


# ------------------------------------------------------------------------------------------
# C2ST
# ------------------------------------------------------------------------------------------


def test_c2st_at_chance_under_the_null_and_calibrated() -> None:
    rng = np.random.default_rng(4)
    results = [
        c2st(rng.normal(size=(60, 5)), rng.normal(size=(60, 5)), permutations=100, seed=t)
        for t in range(200)
    ]
    aucs = np.array([r.auc for r in results])
    assert abs(float(aucs.mean()) - 0.5) < 0.02
    assert float(np.median([r.proxy_a_distance for r in results])) == 0.0
    rate = float(np.mean([r.p_value < 0.05 for r in results]))
    assert 0.01 <= rate <= 0.10, rate


def test_c2st_near_one_for_separated_data() -> None:
    rng = np.random.default_rng(5)
    result = c2st(rng.normal(size=(80, 4)), rng.normal(size=(80, 4)) + 3.0, permutations=100)
    assert result.auc > 0.98
    assert result.proxy_a_distance > 1.6
    assert result.p_value == pytest.approx(1 / 101)


def test_c2st_sees_a_change_of_spread() -> None:
    # same mean, twice the standard deviation: a linear classifier on z alone sees nothing
    rng = np.random.default_rng(6)
    result = c2st(rng.normal(size=(100, 4)), 2.0 * rng.normal(size=(100, 4)), permutations=100)
    assert result.auc > 0.75
    assert result.p_value < 0.02


@pytest.mark.parametrize("m,n", [(30, 30), (23, 31)])
def test_c2st_closed_form_scores_equal_a_refit_per_fold(m: int, n: int) -> None:
    """The default folds (one sample of the smaller group each) and the Woodbury scores: every
    fold's scores equal a Newton step solved on that fold's training rows alone."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(m, 3)), 1.5 * rng.normal(size=(n, 3))
    assert c2st(a, b, permutations=10).folds == min(m, n)
    design = np.concatenate([rng.normal(size=(m + n, 6)), np.ones((m + n, 1))], axis=1)
    penalty = np.r_[np.ones(6), 1e-9]
    label = np.r_[np.zeros(m), np.ones(n)]
    prior = n / (m + n)
    fold = stratified_folds(label, min(m, n), rng)
    centred = np.stack([label, rng.permutation(label)], axis=1) - prior
    weight = prior * (1 - prior)
    scores = _out_of_fold_scores(design, penalty, weight, fold, centred)
    for k in range(min(m, n)):
        test, train = fold == k, fold != k
        hessian = weight * design[train].T @ design[train] + np.diag(penalty)
        refit = design[test] @ np.linalg.solve(hessian, design[train].T @ centred[train])
        np.testing.assert_allclose(scores[test], refit, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Label shift
# ------------------------------------------------------------------------------------------


def test_label_shift_matches_scipy_and_hand_computation() -> None:
    source, target = [30, 20, 10], [10, 20, 30]
    result = label_shift_test(["a", "b", "c"], source, target)
    # expected counts are 20 in every cell: chi2 = sum (o - e)^2 / e = (100+0+100) * 2 / 20
    assert result.chi2 == pytest.approx(20.0)
    expected = stats.chi2_contingency(np.array([source, target]), correction=False)
    assert result.p_value == pytest.approx(float(expected[1]))
    assert result.dof == 2
    assert result.cramers_v == pytest.approx(np.sqrt(20.0 / 120))
    balanced = label_shift_test(["a", "b"], [10, 10], [20, 20])
    assert balanced.chi2 == pytest.approx(0.0) and balanced.cramers_v == pytest.approx(0.0)


def test_class_matching_removes_a_pure_label_shift() -> None:
    digits = load_builtin("digits")
    x, y = everything(digits)
    order = torch.from_numpy(np.random.default_rng(7).permutation(len(x)))
    src, pool = order[:500], order[500:]
    # target: every sample of digits 0-4 from the rest, one in six of digits 5-9
    low = pool[y[pool] <= 4]
    high = pool[y[pool] >= 5]
    tgt = torch.cat([low, high[: len(high) // 6]])
    source = make_problem(x[src], y[src], digits.task, digits.domain)
    target = make_problem(x[tgt], y[tgt], digits.task, digits.domain)
    evidence = compare_domains(source, target, permutations=100, seed=1)
    assert evidence.label_shift is not None and evidence.label_shift.p_value < 1e-6
    assert evidence.matching == "class-matched"
    assert evidence.verdict == "same", evidence.reason
    # without the labels (as a regression task) the same inputs do read as a different domain
    task = Task("regression")
    unlabelled_s = make_problem(x[src], y[src, None].float(), task, digits.domain)
    unlabelled_t = make_problem(x[tgt], y[tgt, None].float(), task, digits.domain)
    direct = compare_domains(unlabelled_s, unlabelled_t, permutations=100, seed=1)
    assert direct.matching == "direct"
    assert direct.c2st.p_value < 0.025 and direct.mmd.p_value < 0.025
    assert direct.c2st.auc > evidence.c2st.auc + 0.05


# ------------------------------------------------------------------------------------------
# Verdicts without tests, and the evidence itself
# ------------------------------------------------------------------------------------------


def test_disjoint_classes_are_undecided_with_reason_and_statistics() -> None:
    low = load_builtin("digits", classes=[0, 1, 2, 3, 4])
    high = load_builtin("digits", classes=[5, 6, 7, 8, 9])
    evidence = compare_domains(low, high, permutations=50)
    assert evidence.verdict == "undecided"
    assert "share no label" in evidence.reason
    assert evidence.matching == "disjoint-labels"
    assert evidence.mmd is not None and evidence.c2st is not None
    assert evidence.label_shift is None


def test_different_modalities_are_different_by_schema_without_tests() -> None:
    digits, signals = load_builtin("digits"), load_builtin("mnist1d", n=300)
    schema = check_schema(digits, signals)
    assert not schema.comparable
    assert schema.modality == ("image", "signal")
    evidence = compare_domains(digits, signals)
    assert evidence.verdict == "different"
    assert evidence.reason.startswith("schema:")
    assert evidence.mmd is None and evidence.c2st is None and evidence.null_control is None
    json.dumps(evidence.to_dict())


def test_too_few_samples_is_undecided_and_says_how_many_are_needed() -> None:
    digits = load_builtin("digits")
    x, y = everything(digits)
    source = make_problem(x[:8], y[:8], digits.task, digits.domain)
    target = make_problem(x[8:16], y[8:16], digits.task, digits.domain)
    evidence = compare_domains(source, target)
    assert evidence.verdict == "undecided"
    assert f"at least {MIN_PER_SIDE} per side" in evidence.reason
    assert evidence.n["source_used"] <= 8 and evidence.mmd is None
    assert f"there are {evidence.n['source_used']} (source)" in evidence.reason


def test_evidence_is_deterministic_json_and_shows_controls() -> None:
    digits = load_builtin("digits", n=400)
    shifted = load_builtin("digits", n=400, seed=1, shift={"rotation": 30})
    first = compare_domains(digits, shifted, permutations=50, seed=3).to_dict()
    second = compare_domains(digits, shifted, permutations=50, seed=3).to_dict()
    assert json.dumps(first) == json.dumps(second)
    assert first["verdict"] == "different"
    # 8 × 8 digits: all 64 pixels, whitened on both samples pooled
    assert first["representation"]["kind"] == "pca" and first["representation"]["dims"] == 64
    assert first["representation"]["fitted_on"] == "pooled"
    assert first["positive_control"]["detected"] is True
    null_auc = first["null_control"]["c2st"]["auc"]
    positive_auc = first["positive_control"]["c2st"]["auc"]
    assert positive_auc > null_auc
    assert first["threshold"]["auc_excess"] == pytest.approx(0.25 * (positive_auc - 0.5))


def test_user_features_are_used_and_reduced_when_wide() -> None:
    digits = load_builtin("digits", n=300)
    other = load_builtin("digits", n=300, seed=1)
    weights = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))
    wide = compare_domains(digits, other, features=lambda x: x.flatten(1) @ weights)
    assert wide.representation["kind"] == "features+pca"
    assert wide.representation["input_dims"] == 100
    narrow = compare_domains(digits, other, features=lambda x: x.flatten(1)[:, :30])
    assert narrow.representation == {
        "kind": "features",
        "input_dims": 30,
        "dims": 30,
        "scaling": "standardised",
        "fitted_on": "pooled",
    }
    assert wide.verdict == narrow.verdict == "same"


# ------------------------------------------------------------------------------------------
# Calibration: 100 seeded trials per condition
# ------------------------------------------------------------------------------------------

TRIALS = 100
PER_SIDE = 200  # drawn per side; class matching keeps about 180
PERMUTATIONS = 100
MNIST1D_POOL = 1200
#: moderate shifts (signals: generator defaults are noise 0.25, shear 0.75, translation 48;
#: translation 8 means less random shift, so more aligned signals, than the default)
SHIFTS = {
    "digits": [
        {"rotation": 30},
        {"inversion": True},
        {"noise": 0.25},
        {"blur": 1.0},
        {"scale": 0.7},
    ],
    "mnist1d": [{"noise": 0.6}, {"shear": 2.0}, {"translation": 8}],
}
CONDITIONS = [(name, None) for name in SHIFTS] + [
    (name, shift) for name, shifts in SHIFTS.items() for shift in shifts
]


@cache
def pool(name: str, shift_items: tuple | None) -> tuple[torch.Tensor, torch.Tensor, Problem]:
    """All samples of a condition, generated once. mnist1d: the unshifted pool is seed 0 and
    shifted pools seed 1, so source and target never share a generated signal."""
    shift = dict(shift_items) if shift_items else None
    if name == "digits":
        problem = load_builtin("digits", shift=shift)
    else:
        seed = 0 if shift is None else 1
        problem = load_builtin("mnist1d", n=MNIST1D_POOL, seed=seed, shift=shift)
    x, y = everything(problem)
    return x, y, problem


def calibration_counts(name: str, shift: dict | None, trials: int) -> tuple[dict, str]:
    """Verdict counts over ``trials`` seeded trials of one condition, and the verdict wanted.

    Trial ``t`` is seeded ``10_000 + t``, so a shorter run is the first trials of a longer one.
    """
    x, y, problem = pool(name, None)
    shifted = pool(name, tuple(shift.items())) if shift else None
    counts = {"same": 0, "different": 0, "undecided": 0}
    for trial in range(trials):
        rng = np.random.default_rng(10_000 + trial)
        order = torch.from_numpy(rng.permutation(len(x)))
        src, rest = order[:PER_SIDE], order[PER_SIDE : 2 * PER_SIDE]
        source = make_problem(x[src], y[src], problem.task, problem.domain)
        if shifted is None:
            target = make_problem(x[rest], y[rest], problem.task, problem.domain)
        elif name == "digits":
            # the same digit images are never on both sides: target takes other indices
            target = make_problem(
                shifted[0][rest], shifted[1][rest], problem.task, shifted[2].domain
            )
        else:
            pick = torch.from_numpy(rng.permutation(len(shifted[0]))[:PER_SIDE])
            target = make_problem(shifted[0][pick], shifted[1][pick], problem.task, problem.domain)
        evidence = compare_domains(source, target, permutations=PERMUTATIONS, seed=trial)
        counts[evidence.verdict] += 1
    return counts, "same" if shift is None else "different"


@pytest.mark.calibration
@pytest.mark.parametrize("name,shift", CONDITIONS, ids=[f"{n}-{s or 'iid'}" for n, s in CONDITIONS])
def test_calibration(name: str, shift: dict | None) -> None:
    """The full calibration: 100 trials per condition, at least 95 right verdicts.

    With the null grid below, 5 min on two shared cores (307 s, 2026-11-30, load about 6), so
    it runs under its own marker: ``make calibration`` (``pytest -m calibration``);
    ``make test`` runs :func:`test_calibration_quick`.
    """
    counts, expected = calibration_counts(name, shift, TRIALS)
    print(f"\ncalibration {name} {shift or 'iid'}: {counts} (want {expected} >= 95)")
    assert counts[expected] >= 95, counts


#: The quick calibration's trials per condition (the first of the full run's seeded trials).
QUICK_TRIALS = 24
#: A calibrated verdict is wrong on at most ALPHA of the trials (the full run's claim: >= 95 of
#: 100 right).
ALPHA = 0.05
#: The most wrong verdicts the quick calibration allows: the smallest k with
#: P(Binomial(24, 0.05) > k) < 1e-3. scipy gives k = 5, P(> 5) = 9.6e-4 (P(> 4) = 6.0e-3).
#: A broken verdict fails it: one that always says "different" (or never detects a shift) is
#: wrong 24 times of 24 on every iid (shifted) condition; one wrong at rate 0.5 exceeds 5 with
#: probability 0.997, at rate 0.3 with 0.77.
QUICK_MAX_WRONG = int(stats.binom.isf(1e-3, QUICK_TRIALS, ALPHA))


@pytest.mark.slow
@pytest.mark.parametrize("name,shift", CONDITIONS, ids=[f"{n}-{s or 'iid'}" for n, s in CONDITIONS])
def test_calibration_quick(name: str, shift: dict | None) -> None:
    """CI's calibration: 24 seeded trials per condition, at most QUICK_MAX_WRONG wrong verdicts
    (derivation beside the constant); a quarter of the full run's time (about 20 s)."""
    assert QUICK_MAX_WRONG == 5 and stats.binom.sf(QUICK_MAX_WRONG, QUICK_TRIALS, ALPHA) < 1e-3
    counts, expected = calibration_counts(name, shift, QUICK_TRIALS)
    wrong = QUICK_TRIALS - counts[expected]
    print(f"\nquick calibration {name} {shift or 'iid'}: {counts} (want {expected})")
    assert wrong <= QUICK_MAX_WRONG, counts


# ------------------------------------------------------------------------------------------
# Calibration at small n and high dimension: two draws of one Gaussian N(0, I_d)
# ------------------------------------------------------------------------------------------

#: The grid of (samples per side, dimensions): d near n and above it, where a representation
#: fitted on the source alone read "different" on every trial (benchmarks/domain_null_grid.py).
NULL_GRID = [(n, d) for n in (20, 30, 50, 100) for d in (5, 20, 50)]
#: Most "different" verdicts allowed in 100 trials of a cell: the smallest k with
#: P(Binomial(100, 0.05) > k) < 1e-3, i.e. a verdict whose false-positive rate is 5% fails a
#: cell with chance below 1e-3 (scipy: k = 13, P(> 13) = 4.6e-4; the 12 cells together below
#: 12 × 4.6e-4 = 5.6e-3). A rate of 20% passes a cell with chance 0.03.
NULL_GRID_MAX_DIFFERENT = int(stats.binom.isf(1e-3, TRIALS, ALPHA))


def gaussian_null_counts(n: int, d: int, trials: int) -> dict[str, int]:
    """Verdict counts over ``trials`` pairs of independent draws of N(0, I_d), ``n`` per side
    (tabular, regression task: compared directly). Trial ``t`` draws with seed ``20_000 + t``
    and measures with seed ``t`` at the defaults (200 permutations, up to 5 seeds)."""
    task, domain = Task("regression"), Domain("gauss", "tabular", (d,))
    counts = {"same": 0, "different": 0, "undecided": 0}
    for trial in range(trials):
        rng = np.random.default_rng(20_000 + trial)
        a, b = (torch.from_numpy(rng.normal(size=(n, d))) for _ in range(2))
        y = torch.zeros(n, 1)
        evidence = compare_domains(make_problem(a, y, task, domain),
                                   make_problem(b, y, task, domain), seed=trial)
        counts[evidence.verdict] += 1
    return counts


@pytest.mark.calibration
@pytest.mark.parametrize("n,d", NULL_GRID, ids=[f"n{n}-d{d}" for n, d in NULL_GRID])
def test_calibration_small_n_high_d_null(n: int, d: int) -> None:
    """100 iid trials per cell: at most NULL_GRID_MAX_DIFFERENT "different" (derivation beside
    the constant); where the tests lack power the verdict is "undecided" and says how many
    samples are needed, never "different"."""
    assert NULL_GRID_MAX_DIFFERENT == 13
    counts = gaussian_null_counts(n, d, TRIALS)
    print(f"\nnull grid n={n} d={d}: {counts}")
    assert counts["different"] <= NULL_GRID_MAX_DIFFERENT, counts


#: Two cells where a source-only fit read "different" 100 times in 100 (30 per side in 20
#: dimensions; 100 per side in 50).
QUICK_NULL_CELLS = [(30, 20), (100, 50)]


@pytest.mark.parametrize("n,d", QUICK_NULL_CELLS, ids=[f"n{n}-d{d}" for n, d in QUICK_NULL_CELLS])
def test_small_n_high_d_null_quick(n: int, d: int) -> None:
    """The first QUICK_TRIALS trials of the grid's cell: at most QUICK_MAX_WRONG "different"
    (P < 1e-3 at a 5% rate, derivation beside the constant)."""
    counts = gaussian_null_counts(n, d, QUICK_TRIALS)
    assert counts["different"] <= QUICK_MAX_WRONG, counts


def test_undecided_at_small_n_says_how_many_samples_are_needed() -> None:
    """20 per side in 5 dimensions: the positive control is not detected, so the verdict is
    undecided, with one line saying how many samples per side it would take."""
    task, domain = Task("regression"), Domain("gauss", "tabular", (5,))
    rng = np.random.default_rng(20_000)
    a, b = (torch.from_numpy(rng.normal(size=(20, 5))) for _ in range(2))
    y = torch.zeros(20, 1)
    evidence = compare_domains(make_problem(a, y, task, domain), make_problem(b, y, task, domain))
    assert evidence.verdict == "undecided"
    assert "\n" not in evidence.reason
    assert evidence.reason.startswith("too few samples for the positive control")
    needed = int(evidence.reason.split("about ")[1].split(" per side")[0])
    assert needed > 20, evidence.reason
