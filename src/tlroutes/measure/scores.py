"""Transferability scores as pure functions of features and labels (numpy or torch arrays).

The definitions, and the variants implemented, are listed in :mod:`tlroutes.measure.
transferability`, which ranks candidate trunks with them. Higher is better for every score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from tlroutes.errors import ConfigError, DataError

ArrayLike = Any  # a numpy array, a torch tensor, or anything np.asarray reads


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
