"""Transferability: how well would a trunk's features serve a target task, before fine-tuning?

Every score reads the target's training samples and higher is better for all of them:

===================  ============================================================================
score                definition (and the variant implemented here)
===================  ============================================================================
``logme``            You et al. 2021 (ICML), LogME: the log marginal likelihood (evidence) of a
                     Bayesian linear model ``y = f·w + e``, ``w ~ N(0, α⁻¹I)``, ``e ~ N(0, β⁻¹)``,
                     maximised over ``α, β`` by MacKay's fixed-point updates via the SVD of the
                     feature matrix, divided by ``n``; averaged over the one-hot class columns
                     (classification) or the target columns (multilabel, regression).
``h_score``          Bao et al. 2019: ``tr(cov(f)⁻¹ cov(E[f|y]))``; with ``shrinkage=True`` (the
                     default) Ibrahim et al. 2022's regularised form
                     ``tr(cov_α(f)⁻¹ (1-α) cov(E[f|y]))`` with the Ledoit–Wolf estimate
                     ``cov_α(f) = (1-α) S + α (tr S / D) I``.
``knn``              cross-validated k-nearest-neighbour accuracy on L2-normalised features.
``linear_probe``     cross-validated accuracy of a standardised logistic-regression probe.
``leep``             Nguyen et al. 2020, LEEP: needs the source model's soft predictions.
``nce``              Tran et al. 2019, NCE = -H(Y|Z): needs the source model's hard predictions.
===================  ============================================================================

:func:`rank_trunks` computes every score that applies, with bootstrap intervals and ranks, for a
set of candidate trunks on one target :class:`~tlroutes.problem.Problem`, and warns when the
scores disagree about which candidate is best.

Example::

    evidence = rank_trunks({"digits": model_a.features, "random": model_b.features}, target)
    for row in evidence.table():
        print(row)
    print(evidence.warnings)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tlroutes.errors import ConfigError, DataError
from tlroutes.problem import Problem

ArrayLike = Any  # a numpy array, a torch tensor, or anything np.asarray reads

#: Scores whose ranking is compared by :func:`rank_trunks`, in table order.
SCORES: tuple[str, ...] = ("logme", "h_score", "knn", "linear_probe", "leep", "nce")

#: Pairs of scores whose candidate rankings have a Kendall τ below this raise a warning.
KENDALL_WARN_BELOW = 0.5


# -- input checks --------------------------------------------------------------------------------


def _as_numpy(values: ArrayLike, what: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.size and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{what} contain NaN or Inf; clean them before scoring.")
    return array


def _features(features: ArrayLike) -> np.ndarray:
    f = _as_numpy(features, "features").astype(np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(
            f"features must have shape (N, D) with N >= 2 samples, got {tuple(f.shape)}."
        )
    return f


def _class_labels(labels: ArrayLike, n: int, what: str = "labels") -> np.ndarray:
    y = _as_numpy(labels, what)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{what} must have shape ({n},) (one class per sample), got {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise DataError(f"{what} must be integer class indices, got dtype {y.dtype}.")
        y = y.astype(np.int64)
    return y.astype(np.int64)


def _targets(labels: ArrayLike, n: int, kind: str) -> np.ndarray:
    """The columns LogME regresses on: one-hot of the classes present, or the target columns."""
    if kind == "classification":
        y = _class_labels(labels, n)
        classes = np.unique(y)
        return (y[:, None] == classes[None, :]).astype(np.float64)
    if kind not in ("multilabel", "regression"):
        raise ConfigError(
            f"kind must be 'classification', 'multilabel' or 'regression', got {kind!r}."
        )
    y = _as_numpy(labels, "labels").astype(np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise DataError(f"{kind} labels must have shape ({n}, K), got {tuple(y.shape)}.")
    return y


# -- LogME ---------------------------------------------------------------------------------------


def logme(
    features: ArrayLike,
    labels: ArrayLike,
    kind: str = "classification",
    *,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> float:
    """LogME (You et al., ICML 2021): maximum log-evidence per sample of a linear model on f.

    For each target column ``y`` (length ``n``) the model is ``y = F w + e`` with prior
    ``w ~ N(0, α⁻¹ I_D)`` and noise ``e ~ N(0, β⁻¹ I_n)``; its log-evidence is
    ``n/2 log β + D/2 log α - n/2 log 2π - β/2 |y - F m|² - α/2 |m|² - 1/2 log|α I + β FᵀF|``
    with ``m = β (α I + β FᵀF)⁻¹ Fᵀ y``. ``α, β`` are set by MacKay's fixed point
    (``γ = Σ βσᵢ/(α+βσᵢ)``, ``α = γ/|m|²``, ``β = (n-γ)/|y-Fm|²``, ``σᵢ`` the eigenvalues of
    ``FᵀF``, from one SVD of ``F``), starting at ``α = β = 1``. The result is the mean over columns
    of the maximum log-evidence divided by ``n``. As in the paper the features are used as given
    (no centring, no bias column).

    Args:
        features: ``(N, D)`` features.
        labels: classification: ``(N,)`` integer classes, one-hot encoded over the classes that
            occur (a class absent from ``labels`` has no column); multilabel: ``(N, K)`` 0/1;
            regression: ``(N, K)`` or ``(N,)`` real targets. An all-zero column (a label that
            never occurs) has unbounded evidence and is left out of the mean.
        kind: ``"classification"`` (default), ``"multilabel"`` or ``"regression"``.
        max_iter: most fixed-point iterations per column. Default 100 (it usually converges in
            fewer than 10).
        tol: stop when ``α`` and ``β`` both change by less than this, relatively. Default 1e-7.

    Returns:
        The score in nats per sample (higher is better); comparable between feature sets on the
        same labels, not between targets. ``math.inf`` when the evidence is unbounded: a target
        column lies exactly in the span of ``F`` while ``F`` has rank below ``N`` (e.g. duplicated
        samples, as in a bootstrap resample, with no more distinct samples than dimensions), so
        an exact fit with vanishing noise is possible.
    """
    f = _features(features)
    n, d = f.shape
    y = _targets(labels, n, kind)
    keep = np.linalg.norm(y, axis=0) > 0
    if not keep.any():
        raise DataError("LogME needs at least one target column that is not all zero.")
    y = y[:, keep]
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    rank = int((s > s.max(initial=0.0) * max(n, d) * np.finfo(float).eps).sum())
    u, sigma = u[:, :rank], s[:rank] ** 2  # FᵀF's non-zero spectrum; its other D - r are 0
    z = u.T @ y  # each column's coordinates in the span of F
    outside = ((y - u @ z) ** 2).sum(0)  # |y|² off that span
    if rank < n and bool((outside <= 1e-12 * (y**2).sum(0)).any()):
        # y lies in the span of fewer than n directions (duplicated rows, or rank-deficient F):
        # the noise can shrink to zero with an exact fit, and the evidence grows without bound.
        return math.inf
    evidences = [_column_evidence(z[:, j], outside[j], sigma, n, d, max_iter, tol)
                 for j in range(y.shape[1])]
    return float(np.mean(evidences) / n)


def _column_evidence(
    z: np.ndarray, outside: float, sigma: np.ndarray, n: int, d: int, max_iter: int, tol: float
) -> float:
    """Maximum log-evidence of one column, given its SVD coordinates ``z = Uᵀy``."""
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        shrink = alpha + beta * sigma
        gamma = float((beta * sigma / shrink).sum())
        m2 = float(((beta * np.sqrt(sigma) * z / shrink) ** 2).sum())
        res2 = outside + float(((alpha * z / shrink) ** 2).sum())
        if m2 <= 0:
            # y has no component along F: the evidence grows with α towards that of the model
            # y = e alone, whose best β is n / |y|²
            beta = n / res2
            return n / 2 * (math.log(beta) - math.log(2 * math.pi) - 1)
        new_alpha, new_beta = gamma / m2, (n - gamma) / res2
        done = (abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    shrink = alpha + beta * sigma
    m2 = float(((beta * np.sqrt(sigma) * z / shrink) ** 2).sum())
    res2 = outside + float(((alpha * z / shrink) ** 2).sum())
    logdet = float(np.log(shrink).sum()) + (d - sigma.size) * math.log(alpha)
    return (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)


# -- H-score -------------------------------------------------------------------------------------


def h_score(features: ArrayLike, labels: ArrayLike, shrinkage: bool = True) -> float:
    """H-score (Bao et al. 2019): ``tr(cov(f)⁻¹ cov(E[f|y]))``.

    ``cov(f)`` is the covariance of the features and ``cov(E[f|y])`` that of each sample's class
    mean (the between-class covariance); both are maximum-likelihood estimates (divided by
    ``N``), so their ratio is free of the ``N`` vs ``N-1`` choice.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` integer classes.
        shrinkage: ``True`` (default): the regularised H-score of Ibrahim et al. 2022 ("Newer is
            not always better", NeurIPS), ``tr(cov_α(f)⁻¹ (1-α) cov(E[f|y]))``, where
            ``cov_α(f) = (1-α) S + α (tr S / D) I`` is the Ledoit–Wolf (2004) shrinkage of the
            sample covariance ``S`` with its closed-form ``α`` (scikit-learn's
            ``ledoit_wolf_shrinkage`` on the centred features). ``False``: the original
            H-score with the Moore–Penrose pseudo-inverse of ``cov(f)``, which is unstable when
            ``D`` is close to ``N`` or features are collinear.

    Returns:
        The score (dimensionless, at most the number of classes minus one for the original form;
        higher is better).
    """
    f = _features(features)
    y = _class_labels(labels, f.shape[0])
    f = f - f.mean(0, keepdims=True)
    cov_f = f.T @ f / f.shape[0]
    means = np.zeros_like(f)
    for c in np.unique(y):
        means[y == c] = f[y == c].mean(0)
    cov_g = means.T @ means / f.shape[0]  # the class means are centred too: f is
    if not shrinkage:
        return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))
    if np.trace(cov_f) <= 0:
        return 0.0  # constant features carry no information (and Ledoit–Wolf is undefined)
    from sklearn.covariance import ledoit_wolf_shrinkage

    alpha = float(ledoit_wolf_shrinkage(f, assume_centered=True))
    mu = float(np.trace(cov_f)) / f.shape[1]
    shrunk = (1 - alpha) * cov_f + alpha * mu * np.eye(f.shape[1])
    return float(np.trace(np.linalg.solve(shrunk, (1 - alpha) * cov_g)))


# -- LEEP and NCE --------------------------------------------------------------------------------


def leep(source_probs: ArrayLike, labels: ArrayLike) -> float:
    """LEEP (Nguyen et al., ICML 2020): log expected empirical prediction.

    With ``θ(x)`` the source model's probabilities over its ``Z`` classes: the empirical joint
    ``P(y, z) = 1/N Σ_{i: yᵢ=y} θ(xᵢ)_z``, the conditional ``P(y|z) = P(y, z) / Σ_y' P(y', z)``,
    and ``LEEP = 1/N Σᵢ log Σ_z P(yᵢ|z) θ(xᵢ)_z``.

    Args:
        source_probs: ``(N, Z)`` probabilities (each row non-negative, summing to 1; rows are
            renormalised). Pass ``softmax(logits)``, not logits.
        labels: ``(N,)`` integer target classes.

    Returns:
        The score in nats (≤ 0; higher is better).
    """
    theta = _as_numpy(source_probs, "source_probs").astype(np.float64)
    if theta.ndim != 2 or theta.shape[0] < 1:
        raise DataError(f"source_probs must have shape (N, Z), got {tuple(theta.shape)}.")
    if (theta < 0).any():
        raise DataError("source_probs must be probabilities (>= 0); apply softmax to logits.")
    theta = theta / theta.sum(1, keepdims=True)
    y = _class_labels(labels, theta.shape[0])
    classes, index = np.unique(y, return_inverse=True)
    joint = np.zeros((classes.size, theta.shape[1]))
    np.add.at(joint, index, theta)
    joint /= theta.shape[0]
    marginal = joint.sum(0, keepdims=True)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = (theta * conditional[index]).sum(1)
    return float(np.mean(np.log(expected)))


def nce(source_pred_labels: ArrayLike, labels: ArrayLike) -> float:
    """NCE (Tran et al., ICCV 2019): negative conditional entropy ``-H(Y|Z)``.

    ``Z`` is the source model's hard prediction (arg-max) and ``Y`` the target label; with the
    empirical joint ``P(y, z)`` of the pairs, ``NCE = Σ_{y,z} P(y, z) log P(y|z)``.

    Args:
        source_pred_labels: ``(N,)`` integer source predictions.
        labels: ``(N,)`` integer target classes.

    Returns:
        The score in nats (≤ 0; 0 when the target label is a function of the source
        prediction; higher is better).
    """
    z = _class_labels(source_pred_labels, len(np.asarray(labels)), "source_pred_labels")
    y = _class_labels(labels, z.shape[0])
    _, zi = np.unique(z, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    counts = np.zeros((yi.max() + 1, zi.max() + 1))
    np.add.at(counts, (yi, zi), 1.0)
    joint = counts / z.shape[0]
    conditional = joint / joint.sum(0, keepdims=True)  # every z column has a sample
    nonzero = joint > 0
    return float((joint[nonzero] * np.log(conditional[nonzero])).sum())


# -- cross-validated probes ----------------------------------------------------------------------


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
    if folds < 2:
        raise ConfigError(f"folds must be >= 2, got {folds}.")
    if smallest < 2 or np.unique(y).size < 2:
        raise DataError(
            "Cross-validated probes need at least two classes with two samples each; "
            f"the smallest class here has {smallest}."
        )
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(y.shape[0]), y))


def knn_hits(
    features: ArrayLike, labels: ArrayLike, k: int = 5, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Per-sample out-of-fold correctness of :func:`knn_accuracy` (a bool array ``(N,)``)."""
    from sklearn.neighbors import KNeighborsClassifier

    f = _features(features)
    y = _class_labels(labels, f.shape[0])
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}.")
    # Cosine geometry: scale differences between trunks should not decide the neighbours.
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    hits = np.zeros(f.shape[0], dtype=bool)
    for train, test in _folds(y, folds, seed):
        probe = KNeighborsClassifier(n_neighbors=min(k, train.size)).fit(f[train], y[train])
        hits[test] = probe.predict(f[test]) == y[test]
    return hits


def knn_accuracy(
    features: ArrayLike, labels: ArrayLike, k: int = 5, folds: int = 5, seed: int = 0
) -> float:
    """Cross-validated k-nearest-neighbour accuracy of ``labels`` from ``features``.

    Features are L2-normalised (so Euclidean neighbours are cosine neighbours); each sample is
    classified by a majority vote of its ``k`` nearest training samples (scikit-learn's
    ``KNeighborsClassifier``, uniform weights) in stratified ``folds``-fold cross-validation
    (shuffled with ``seed``; fewer folds when the smallest class has fewer samples).

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` integer classes.
        k: neighbours. Default 5.
        folds: cross-validation folds. Default 5.
        seed: fold shuffling seed. Default 0.

    Returns:
        The fraction of samples classified correctly out of fold, in ``[0, 1]``.
    """
    return float(knn_hits(features, labels, k, folds, seed).mean())


def linear_probe_hits(
    features: ArrayLike, labels: ArrayLike, folds: int = 5, seed: int = 0, c: float = 1.0
) -> np.ndarray:
    """Per-sample out-of-fold correctness of :func:`linear_probe_accuracy` (bool ``(N,)``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f = _features(features)
    y = _class_labels(labels, f.shape[0])
    hits = np.zeros(f.shape[0], dtype=bool)
    for train, test in _folds(y, folds, seed):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        probe.fit(f[train], y[train])
        hits[test] = probe.predict(f[test]) == y[test]
    return hits


def linear_probe_accuracy(
    features: ArrayLike, labels: ArrayLike, folds: int = 5, seed: int = 0, c: float = 1.0
) -> float:
    """Cross-validated accuracy of a linear probe on ``features``.

    The probe is scikit-learn's ``StandardScaler`` (fitted on the training folds) followed by
    multinomial ``LogisticRegression`` (L2, inverse strength ``c``, lbfgs), in stratified
    ``folds``-fold cross-validation shuffled with ``seed``.

    Args:
        features: ``(N, D)`` features.
        labels: ``(N,)`` integer classes.
        folds: cross-validation folds. Default 5.
        seed: fold shuffling seed. Default 0.
        c: inverse L2 regularisation strength. Default 1.0.

    Returns:
        The fraction of samples classified correctly out of fold, in ``[0, 1]``.
    """
    return float(linear_probe_hits(features, labels, folds, seed, c).mean())


# -- ranking candidate trunks --------------------------------------------------------------------


@dataclass
class ScoreEstimate:
    """One score of one candidate."""

    value: float
    """The score on all (kept) target training samples."""
    low: float | None
    """2.5th percentile of the bias-corrected bootstrap replicates (see :func:`rank_trunks`);
    ``None`` when a replicate is undefined (``undefined_replicates`` > 0)."""
    high: float | None
    """97.5th percentile of the bias-corrected bootstrap replicates, or ``None``."""
    rank: int
    """1 = the best candidate under this score; ties share the better rank."""
    bias: float | None = 0.0
    """The bootstrap's bias estimate, mean of the replicates minus ``value`` (0 without
    resamples, ``None`` without an interval); the interval is shifted by ``-bias``."""
    undefined_replicates: int = 0
    """Bootstrap replicates whose score is not finite (LogME's evidence is unbounded on a
    resample with fewer distinct samples than feature dimensions)."""


@dataclass
class TransferabilityEvidence:
    """What :func:`rank_trunks` measured: scores, intervals, ranks and disagreements."""

    target: str
    """The target problem's name."""
    kind: str
    """The target task's kind."""
    n_samples: int
    """Target training samples scored (at most ``max_samples``)."""
    candidates: list[str]
    """Candidate names, in the order given."""
    scores: dict[str, dict[str, ScoreEstimate]]
    """``{score: {candidate: estimate}}`` for every score computed (see :data:`SCORES`)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """``{score: reason}`` for the scores not computed (or computed for some candidates only)."""
    kendall: dict[str, float] = field(default_factory=dict)
    """``{"a vs b": τ}``: Kendall τ-b between two scores' values over the candidates both rate
    (at least three); NaN when one score ties every candidate."""
    warnings: list[str] = field(default_factory=list)
    """Disagreements between scores (see :func:`rank_trunks` for the rule)."""
    notes: list[str] = field(default_factory=list)
    """Scores whose best candidate's bootstrap interval overlaps the runner-up's (the lead is
    not resolved at this sample size), and scores or intervals that could not be computed."""
    settings: dict[str, Any] = field(default_factory=dict)
    """``bootstrap``, ``seed``, ``max_samples``, ``k``, ``folds``, ``kendall_warn_below``."""

    def best(self, score: str) -> str:
        """The candidate ranked first by ``score``."""
        ranked = self.scores[score]
        return min(ranked, key=lambda name: (ranked[name].rank, self.candidates.index(name)))

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate: ``candidate``, then per score ``<score>`` (value),
        ``<score>_low``, ``<score>_high`` and ``<score>_rank`` (absent where not computed)."""
        rows = []
        for name in self.candidates:
            row: dict[str, Any] = {"candidate": name}
            for score, by_candidate in self.scores.items():
                if name in by_candidate:
                    e = by_candidate[name]
                    row.update({score: e.value, f"{score}_low": e.low, f"{score}_high": e.high,
                                f"{score}_rank": e.rank})
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN τ values become ``None``)."""
        out = asdict(self)
        out["kendall"] = {k: (None if math.isnan(v) else v) for k, v in self.kendall.items()}
        return out


def _owner(fn: Callable) -> nn.Module | None:
    """The module behind ``fn`` (a module, or a bound method of one such as ``model.features``)."""
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@torch.no_grad()
def _apply(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> np.ndarray:
    """``fn`` over ``x`` in batches, without gradients, in eval mode (the mode is restored)."""
    module = _owner(fn)
    modes = [(m, m.training) for m in module.modules()] if module is not None else []
    device = next((p.device for p in module.parameters()), None) if module is not None else None
    if module is not None:
        module.eval()
    try:
        parts = []
        for start in range(0, x.shape[0], batch_size):
            batch = x[start:start + batch_size]
            out = fn(batch if device is None else batch.to(device))
            parts.append(out.detach().float().flatten(1).cpu())
    finally:
        for m, mode in modes:
            m.train(mode)
    return torch.cat(parts).numpy().astype(np.float64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(1, keepdims=True)


def _rank(values: dict[str, float]) -> dict[str, int]:
    from scipy.stats import rankdata

    names = list(values)
    ranks = rankdata([-values[n] for n in names], method="min")
    return {name: int(ranks[i]) for i, name in enumerate(names)}


def rank_trunks(
    candidates: Mapping[str, Callable[[Tensor], Tensor]],
    target: Problem,
    *,
    source_heads: Mapping[str, Callable[[Tensor], Tensor]] | None = None,
    bootstrap: int = 100,
    seed: int = 0,
    max_samples: int = 2000,
    k: int = 5,
    folds: int = 5,
    batch_size: int = 256,
) -> TransferabilityEvidence:
    """Score candidate trunks on a target problem's training split, before any fine-tuning.

    Each candidate's features of the target's training inputs are computed once (batches of
    ``batch_size``, no gradients; a candidate that is an ``nn.Module`` or a bound method of one,
    such as ``model.features``, is put in eval mode and on its own device, and its modes are
    restored). Then every score that applies to the target's kind:

    - classification: ``logme``, ``h_score`` (shrinkage form), ``knn``, ``linear_probe``, and
      ``leep`` and ``nce`` for the candidates with a source head;
    - multilabel and regression: ``logme`` only (per target column).

    Intervals: ``bootstrap`` resamples of the samples (with replacement, seeded by ``seed``);
    LogME, H-score, LEEP and NCE are recomputed on each. A resample holds only ~63 % distinct
    samples, which a linear model fits more easily, so the replicates of LogME (and, less,
    H-score and NCE) sit above the full-sample value — often all of them, so that the plain
    percentile interval would exclude the estimate itself. The replicates are therefore shifted
    by the bootstrap's bias estimate (their mean minus the value, kept as ``bias``) and the
    interval is their 2.5/97.5 percentiles: the spread of the bootstrap around the estimate.
    The probes (``knn``, ``linear_probe``) are not refitted: their interval resamples the
    out-of-fold correctness of each sample, so it covers the evaluation samples' variability but
    not the probe's (refitting on a resample would put copies of one sample in both the training
    and the test folds). A replicate that is not finite (LogME on a resample with fewer distinct
    samples than feature dimensions: its evidence is unbounded) leaves that candidate's score
    without an interval (``low``/``high`` ``None``, counted in ``undefined_replicates``, and a
    note); a point value that is not finite leaves the candidate out of that score.

    Warnings (the disagreement rule): for every pair of computed scores, over the candidates both
    rate, a warning is raised when they pick different best candidates (two or more common
    candidates) or when the Kendall τ-b of their values is below :data:`KENDALL_WARN_BELOW`
    (0.5; three or more common candidates). Separately, ``notes`` lists the scores whose best
    candidate's interval overlaps the runner-up's (the lead is not resolved).

    Args:
        candidates: ``{name: features function}``; each maps a batch of target inputs
            ``(B, *input_shape)`` to features ``(B, D)`` (more dimensions are flattened).
        target: the target problem; its ``train`` split is scored.
        source_heads: ``{candidate name: head}``, optional: a head maps that candidate's features
            to the logits of its source classifier (a categorical task: softmax gives LEEP's
            ``θ``, arg-max NCE's ``z``). Default ``None``: no LEEP/NCE.
        bootstrap: bootstrap resamples; 0 gives intervals equal to the value. Default 100.
        seed: seed of the sample subset, the folds and the resamples. Default 0.
        max_samples: score at most this many training samples (a seeded random subset).
            Default 2000.
        k: neighbours of the ``knn`` score. Default 5.
        folds: cross-validation folds of the probes. Default 5.
        batch_size: samples per forward pass. Default 256.

    Returns:
        A :class:`TransferabilityEvidence`.
    """
    if not candidates:
        raise ConfigError("rank_trunks needs at least one candidate.")
    heads = dict(source_heads or {})
    unknown = sorted(set(heads) - set(candidates))
    if unknown:
        raise ConfigError(f"source_heads names {unknown}, which are not among the candidates "
                          f"{list(candidates)}.")
    if bootstrap < 0 or max_samples < 2:
        raise ConfigError("bootstrap must be >= 0 and max_samples >= 2.")
    rng = np.random.default_rng(seed)
    x, y_all = target.train.x, target.train.y
    keep = np.arange(len(target.train))
    if keep.size > max_samples:
        keep = np.sort(rng.choice(keep.size, size=max_samples, replace=False))
    x = x[torch.as_tensor(keep)]
    y = y_all[torch.as_tensor(keep)].cpu().numpy()
    n = keep.size
    kind = target.task.kind
    resamples = [rng.integers(0, n, size=n) for _ in range(bootstrap)]

    feats = {name: _apply(fn, x, batch_size) for name, fn in candidates.items()}
    values: dict[str, dict[str, tuple[float, np.ndarray]]] = {}
    skipped: dict[str, str] = {}

    def record(score: str, name: str, point: float, boot: list[float]) -> None:
        values.setdefault(score, {})[name] = (point, np.asarray(boot, dtype=np.float64))

    for name, f in feats.items():
        record("logme", name, logme(f, y, kind),
               [logme(f[r], y[r], kind) for r in resamples])
        if kind != "classification":
            continue
        record("h_score", name, h_score(f, y),
               [h_score(f[r], y[r]) for r in resamples])
        for score, hits_of in (("knn", lambda f: knn_hits(f, y, k, folds, seed)),
                               ("linear_probe", lambda f: linear_probe_hits(f, y, folds, seed))):
            try:
                hits = hits_of(f).astype(np.float64)
            except DataError as exc:  # too few samples per class to cross-validate
                skipped[score] = str(exc)
                continue
            record(score, name, float(hits.mean()), [float(hits[r].mean()) for r in resamples])
        if name in heads:
            logits = _apply(heads[name], torch.as_tensor(f, dtype=torch.float32), batch_size)
            probs, pred = _softmax(logits), logits.argmax(1)
            record("leep", name, leep(probs, y), [leep(probs[r], y[r]) for r in resamples])
            record("nce", name, nce(pred, y), [nce(pred[r], y[r]) for r in resamples])
    if kind != "classification":
        for score in ("h_score", "knn", "linear_probe", "leep", "nce"):
            skipped[score] = f"needs a classification target; this one is {kind}"
    elif not heads:
        skipped["leep"] = skipped["nce"] = "no source heads given"
    elif len(heads) < len(candidates):
        missing = [c for c in candidates if c not in heads]
        skipped["leep"] = skipped["nce"] = f"no source head for {', '.join(missing)}"

    scores: dict[str, dict[str, ScoreEstimate]] = {}
    notes: list[str] = []
    for score in SCORES:
        rated = {name: v for name, v in values.get(score, {}).items() if math.isfinite(v[0])}
        for name in values.get(score, {}):
            if name not in rated:
                notes.append(f"{score} of {name} is unbounded on these samples (an exact fit is "
                             "possible); it is left out of that score's ranking.")
        if not rated:
            continue
        ranks = _rank({name: v[0] for name, v in rated.items()})
        scores[score] = {}
        for name, (point, boot) in rated.items():
            undefined = int((~np.isfinite(boot)).sum())
            if boot.size == 0:
                estimate = ScoreEstimate(point, point, point, ranks[name])
            elif undefined:
                estimate = ScoreEstimate(point, None, None, ranks[name], None, undefined)
            else:
                bias = float(boot.mean()) - point
                low, high = np.percentile(boot - bias, [2.5, 97.5])
                estimate = ScoreEstimate(point, float(low), float(high), ranks[name], bias)
            scores[score][name] = estimate
        undefined = sum(e.undefined_replicates for e in scores[score].values())
        if undefined:
            notes.append(f"{score}: {undefined} bootstrap replicate(s) were undefined (a resample "
                         "repeats samples; with fewer distinct samples than feature dimensions "
                         "LogME's evidence is unbounded); no interval for the candidates "
                         "affected. Score more samples for intervals.")

    evidence = TransferabilityEvidence(
        target=target.name, kind=kind, n_samples=int(n), candidates=list(candidates),
        scores=scores, skipped=skipped, notes=notes,
        settings={"bootstrap": bootstrap, "seed": seed, "max_samples": max_samples, "k": k,
                  "folds": folds, "kendall_warn_below": KENDALL_WARN_BELOW},
    )
    _disagreements(evidence)
    return evidence


def _disagreements(evidence: TransferabilityEvidence) -> None:
    """Fill ``kendall``, ``warnings`` and ``notes`` (the rule is in :func:`rank_trunks`)."""
    from scipy.stats import kendalltau

    names = list(evidence.scores)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = [c for c in evidence.candidates
                      if c in evidence.scores[a] and c in evidence.scores[b]]
            if len(common) < 2:
                continue
            va = {c: evidence.scores[a][c].value for c in common}
            vb = {c: evidence.scores[b][c].value for c in common}
            best_a, best_b = max(common, key=va.get), max(common, key=vb.get)
            if best_a != best_b:
                evidence.warnings.append(
                    f"{a} and {b} pick different best candidates: {best_a} vs {best_b}"
                    + (f" (over the {len(common)} candidates both rate)"
                       if len(common) < len(evidence.candidates) else "") + ".")
            if len(common) >= 3:
                tau = float(kendalltau([va[c] for c in common], [vb[c] for c in common])[0])
                evidence.kendall[f"{a} vs {b}"] = tau
                if not math.isnan(tau) and tau < KENDALL_WARN_BELOW:
                    evidence.warnings.append(
                        f"{a} and {b} rank the candidates differently: Kendall τ = {tau:.3f} "
                        f"(< {KENDALL_WARN_BELOW}).")
    for score, by_candidate in evidence.scores.items():
        if len(by_candidate) < 2:
            continue
        order = sorted(by_candidate, key=lambda c: -by_candidate[c].value)
        first, second = by_candidate[order[0]], by_candidate[order[1]]
        if first.low is None or second.high is None:
            continue
        if first.low <= second.high:
            evidence.notes.append(
                f"{score}: the lead of {order[0]} over {order[1]} is not resolved (their "
                "bootstrap intervals overlap).")
