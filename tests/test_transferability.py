"""Transferability scores against independent computations, and rank_trunks' sanity."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import multivariate_normal
from torch import nn

from tlroutes.errors import ConfigError, DataError
from tlroutes.measure.scores import (
    h_score,
    knn_accuracy,
    leep,
    linear_probe_accuracy,
    logme,
    nce,
)
from tlroutes.measure.transferability import rank_trunks
from tlroutes.problem import Domain, Problem, Split, Task


def make_problem(x: np.ndarray, y: np.ndarray, classes: int) -> Problem:
    """A tabular classification problem whose train split is (x, y)."""
    split = Split(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))
    return Problem(
        name="synthetic/cls",
        task=Task("classification", tuple(f"c{i}" for i in range(classes))),
        domain=Domain("synthetic", "tabular", (x.shape[1],)),
        train=split, val=split.subset(torch.arange(4)), test=split.subset(torch.arange(4)),
    )


def blobs(n: int, classes: int, dim: int, signal: float, seed: int):
    """Class-dependent means of strength ``signal`` plus unit noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, dim))
    return centres[y] * signal + rng.normal(size=(n, dim)), y


# -- LogME ---------------------------------------------------------------------------------------


def direct_log_evidence(f: np.ndarray, y: np.ndarray) -> float:
    """max over α, β of log N(y; 0, I/β + F Fᵀ/α), found by a generic optimiser."""
    n = f.shape[0]

    def negative(params):
        alpha, beta = np.exp(params)
        cov = np.eye(n) / beta + f @ f.T / alpha
        return -multivariate_normal.logpdf(y, mean=np.zeros(n), cov=cov)

    best = minimize(negative, x0=np.zeros(2), method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    return -best.fun


def test_logme_classification_equals_direct_maximisation():
    f, y = blobs(48, 3, 4, 1.0, seed=1)
    onehot = np.eye(3)[y]
    expected = np.mean([direct_log_evidence(f, onehot[:, c]) for c in range(3)]) / 48
    assert logme(f, y) == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_logme_regression_per_column_equals_direct_maximisation():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(40, 3))
    targets = np.stack([f @ [1.0, -0.5, 0.2] + 0.3 * rng.normal(size=40),
                        0.5 * f[:, 0] + rng.normal(size=40)], axis=1)
    expected = np.mean([direct_log_evidence(f, targets[:, j]) for j in range(2)]) / 40
    assert logme(f, targets, "regression") == pytest.approx(expected, rel=1e-6, abs=1e-7)
    # one column given as (N,) is one target
    one = direct_log_evidence(f, targets[:, 0]) / 40
    assert logme(f, targets[:, 0], "regression") == pytest.approx(one, rel=1e-6, abs=1e-7)


def test_logme_torch_input_and_errors():
    f, y = blobs(30, 2, 3, 1.0, seed=3)
    assert logme(torch.tensor(f), torch.tensor(y)) == pytest.approx(logme(f, y))
    with pytest.raises(DataError):
        logme(f[:, 0], y)
    with pytest.raises(DataError):
        logme(np.full_like(f, np.nan), y)
    with pytest.raises(ConfigError):
        logme(f, y, kind="ranking")


def test_logme_is_unbounded_on_duplicates_with_few_distinct_samples():
    f, y = blobs(12, 2, 20, 1.0, seed=15)  # 12 distinct samples in 20 dimensions
    assert math.isfinite(logme(f, y))  # distinct rows: the exact fit leaves the evidence finite
    twice = np.r_[f, f[:3]], np.r_[y, y[:3]]
    assert logme(*twice) == math.inf
    many = np.r_[f, f + 1e-3 * np.random.default_rng(0).normal(size=f.shape)]
    assert math.isfinite(logme(many, np.r_[y, y]))


def test_rank_trunks_reports_undefined_logme_replicates():
    f, y = blobs(40, 2, 30, 1.0, seed=16)  # a resample has ~25 distinct samples < 30 dims
    evidence = rank_trunks({"a": lambda t: t, "b": lambda t: t * 2.0}, make_problem(f, y, 2),
                           bootstrap=10)
    estimate = evidence.scores["logme"]["a"]
    assert math.isfinite(estimate.value) and estimate.undefined_replicates == 10
    assert estimate.low is None and estimate.high is None
    assert any("undefined" in note for note in evidence.notes)
    assert evidence.scores["h_score"]["a"].low is not None
    json.dumps(evidence.to_dict())


# -- H-score -------------------------------------------------------------------------------------


def explicit_covariances(f: np.ndarray, y: np.ndarray):
    n, d = f.shape
    mean = sum(f[i] for i in range(n)) / n
    cov_f = sum(np.outer(f[i] - mean, f[i] - mean) for i in range(n)) / n
    class_mean = {c: sum(f[i] for i in range(n) if y[i] == c) / sum(y == c) for c in set(y)}
    cov_g = sum(np.outer(class_mean[y[i]] - mean, class_mean[y[i]] - mean) for i in range(n)) / n
    return f - mean, cov_f, cov_g


def test_h_score_plain_equals_explicit_formula():
    f, y = blobs(60, 3, 4, 1.0, seed=4)
    _, cov_f, cov_g = explicit_covariances(f, y)
    expected = np.trace(np.linalg.inv(cov_f) @ cov_g)
    assert h_score(f, y, shrinkage=False) == pytest.approx(expected, rel=1e-9)


def test_h_score_shrinkage_equals_explicit_ledoit_wolf():
    f, y = blobs(30, 3, 12, 0.7, seed=5)
    centred, cov_f, cov_g = explicit_covariances(f, y)
    n, p = f.shape
    mu = np.trace(cov_f) / p
    d2 = np.sum((cov_f - mu * np.eye(p)) ** 2)
    b2_bar = sum(np.sum((np.outer(x, x) - cov_f) ** 2) for x in centred) / n**2
    alpha = min(b2_bar, d2) / d2
    assert 0 < alpha < 1
    shrunk = (1 - alpha) * cov_f + alpha * mu * np.eye(p)
    expected = np.trace(np.linalg.inv(shrunk) @ ((1 - alpha) * cov_g))
    assert h_score(f, y) == pytest.approx(expected, rel=1e-9)


# -- LEEP and NCE --------------------------------------------------------------------------------


def test_leep_equals_explicit_loops():
    rng = np.random.default_rng(6)
    n, z_classes = 25, 4
    theta = rng.dirichlet(np.ones(z_classes), size=n)
    y = rng.integers(0, 3, size=n)
    joint = {(a, b): 0.0 for a in range(3) for b in range(z_classes)}
    for i in range(n):
        for b in range(z_classes):
            joint[(y[i], b)] += theta[i, b] / n
    total = 0.0
    for i in range(n):
        inner = 0.0
        for b in range(z_classes):
            p_z = sum(joint[(a, b)] for a in range(3))
            inner += joint[(y[i], b)] / p_z * theta[i, b]
        total += math.log(inner)
    assert leep(theta, y) == pytest.approx(total / n, rel=1e-12)


def test_nce_equals_explicit_counting():
    rng = np.random.default_rng(7)
    z = rng.integers(0, 5, size=80)
    y = (z + rng.integers(0, 2, size=80)) % 4
    pairs, zs = Counter(zip(z.tolist(), y.tolist(), strict=True)), Counter(z.tolist())
    expected = sum(c / 80 * math.log(c / zs[a]) for (a, _), c in pairs.items())
    assert nce(z, y) == pytest.approx(expected, rel=1e-12)


def test_nce_and_leep_are_zero_when_labels_are_a_function_of_source_labels():
    z = np.random.default_rng(8).integers(0, 6, size=100)
    y = (z * 7) % 3
    assert nce(z, y) == pytest.approx(0.0, abs=1e-12)
    assert leep(np.eye(6)[z], y) == pytest.approx(0.0, abs=1e-12)
    # and it can fail: a label independent of z has NCE = -H(Y) < 0
    assert nce(z, np.arange(100) % 2) < -0.5


# -- probes --------------------------------------------------------------------------------------


def test_knn_accuracy_equals_explicit_neighbours():
    from sklearn.model_selection import StratifiedKFold

    f, y = blobs(50, 2, 3, 0.8, seed=9)
    unit = f / np.linalg.norm(f, axis=1, keepdims=True)
    hits = 0
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(f, y):
        for i in test:
            distance = np.linalg.norm(unit[train] - unit[i], axis=1)
            votes = np.bincount(y[train][np.argsort(distance)[:3]], minlength=2)
            hits += int(votes.argmax() == y[i])
    assert knn_accuracy(f, y, k=3, folds=5, seed=0) == pytest.approx(hits / 50)


def test_linear_probe_accuracy_matches_cross_validation_and_separates():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f, y = blobs(60, 3, 5, 0.6, seed=10)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    predicted = cross_val_predict(probe, f, y, cv=StratifiedKFold(4, shuffle=True, random_state=1))
    assert linear_probe_accuracy(f, y, folds=4, seed=1) == pytest.approx(np.mean(predicted == y))
    separable = np.c_[y * 10.0, np.zeros(60)]
    assert linear_probe_accuracy(separable, y) == 1.0
    with pytest.raises(DataError):
        linear_probe_accuracy(f[:3], y[:3])


# -- rank_trunks ---------------------------------------------------------------------------------


class Columns(nn.Module):
    """A 'trunk' reading some input columns; dropout shows whether eval mode was used."""

    def __init__(self, cols: slice) -> None:
        super().__init__()
        self.cols = cols
        self.drop = nn.Dropout(0.5)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(x[:, self.cols] * self.scale)


def test_informative_features_beat_noise_on_every_score():
    rng = np.random.default_rng(11)
    y = np.arange(150) % 3
    signal = np.eye(3)[y] * 2.0 + 0.5 * rng.normal(size=(150, 3))
    x = np.c_[signal, rng.normal(size=(150, 3))]
    problem = make_problem(x, y, 3)
    good, noise = Columns(slice(0, 3)), Columns(slice(3, 6))
    evidence = rank_trunks(
        {"noise": noise, "good": good}, problem,
        source_heads={"good": lambda f: f * 3.0, "noise": lambda f: f * 3.0},
        bootstrap=30, seed=0,
    )
    assert set(evidence.scores) == {"logme", "h_score", "knn", "linear_probe", "leep", "nce"}
    for score, by_candidate in evidence.scores.items():
        assert by_candidate["good"].value > by_candidate["noise"].value, score
        assert by_candidate["good"].rank == 1 and by_candidate["noise"].rank == 2, score
        assert evidence.best(score) == "good"
        # the bootstrap interval contains the point estimate
        for estimate in by_candidate.values():
            assert estimate.low <= estimate.value <= estimate.high, score
    # duplicated samples make a resample easier to fit: LogME's replicates sit above the value
    assert evidence.scores["logme"]["noise"].bias > 0
    assert evidence.warnings == []
    assert good.training and noise.training  # modes restored after eval-mode scoring
    json.dumps(evidence.to_dict())
    rows = evidence.table()
    assert [r["candidate"] for r in rows] == ["noise", "good"]
    assert rows[1]["logme_rank"] == 1 and "leep_low" in rows[1]


def test_disagreement_warning_fires_when_scores_pick_different_candidates():
    rng = np.random.default_rng(12)
    n = 200
    y = np.arange(n) % 5
    # "index": the class as one number: its source head reads it perfectly (NCE = 0), but a
    # linear model cannot one-hot it, so LogME prefers "onehot", whose source head is useless.
    index = np.c_[y + 0.05 * rng.normal(size=n), rng.normal(size=(n, 2))]
    onehot = np.eye(5)[y] + 0.3 * rng.normal(size=(n, 5))
    noise = rng.normal(size=(n, 3))
    x = np.c_[index, onehot, noise]
    problem = make_problem(x, y, 5)
    heads = {
        "index": lambda f: -(f[:, :1] - torch.arange(5.0)) ** 2,
        "onehot": lambda f: torch.zeros(f.shape[0], 5),
        "noise": lambda f: f[:, :1].repeat(1, 5) * torch.arange(5.0),
    }
    evidence = rank_trunks(
        {"index": lambda t: t[:, 0:3], "onehot": lambda t: t[:, 3:8],
         "noise": lambda t: t[:, 8:11]},
        problem, source_heads=heads, bootstrap=10,
    )
    assert evidence.best("nce") == "index"
    assert evidence.best("logme") == "onehot"
    assert any("logme and nce pick different best candidates" in w for w in evidence.warnings)
    assert evidence.kendall["logme vs nce"] < 0.5


def test_rank_trunks_regression_target_scores_logme_only():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(60, 4))
    target = np.c_[x[:, 0] * 2 + 0.1 * rng.normal(size=60)]
    split = Split(torch.tensor(x, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    problem = Problem("synthetic/reg", Task("regression", ("t",)),
                      Domain("synthetic", "tabular", (4,)), split, split, split)
    evidence = rank_trunks({"right": lambda t: t[:, :2], "wrong": lambda t: t[:, 2:]}, problem,
                           bootstrap=5, max_samples=50)
    assert list(evidence.scores) == ["logme"]
    assert evidence.n_samples == 50
    assert evidence.best("logme") == "right"
    assert "classification" in evidence.skipped["h_score"]


def test_rank_trunks_skips_probes_when_a_class_is_too_small():
    f, y = blobs(21, 3, 2, 1.0, seed=17)
    y[:] = np.r_[np.zeros(10), np.ones(10), [2]]  # class 2 has one sample: no stratified folds
    evidence = rank_trunks({"a": lambda t: t}, make_problem(f, y, 3), bootstrap=3)
    assert "knn" not in evidence.scores and "two samples" in evidence.skipped["knn"]
    assert "logme" in evidence.scores and "h_score" in evidence.scores


def test_rank_trunks_rejects_unknown_head():
    f, y = blobs(20, 2, 2, 1.0, seed=14)
    with pytest.raises(ConfigError):
        rank_trunks({"a": lambda t: t}, make_problem(f, y, 2), source_heads={"b": lambda t: t})
