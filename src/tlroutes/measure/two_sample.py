"""Two-sample tests on feature matrices: kernel MMD, a classifier two-sample test (C2ST) and a
chi-squared test of label shift, plus the whitening PCA that turns inputs into features.

Everything here works on plain NumPy arrays ``(N, d)`` and is deterministic for a seed. The domain
verdict that combines these tests lives in :mod:`tlroutes.measure.domain`.

References for the definitions used: Gretton et al. 2012 (unbiased MMD², median heuristic),
Lopez-Paz & Oquab 2017 (C2ST), Ben-David et al. 2007 (proxy A-distance ``2 (1 - 2 err)``),
Airola et al. 2011 (leave-pair-out cross-validation for the AUC).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

#: Default number of PCA components (capped by the input dimension and ``n - 1``). The domain
#: tests fit the PCA on both compared samples pooled, where more components add no bias, only
#: width: 64 is the width at which they take user features as they are.
PCA_COMPONENTS = 64


# --------------------------------------------------------------------------------------------
# Representation: a whitening PCA
# --------------------------------------------------------------------------------------------


@dataclass
class PCA:
    """A whitening PCA fitted on one sample; :meth:`transform` applies it to any other."""

    mean: np.ndarray
    """Per-feature mean of the fitted sample, shape ``(d,)``."""
    components: np.ndarray
    """Principal directions as rows, shape ``(k, d)``."""
    scale: np.ndarray
    """Standard deviation of the fitted sample along each direction, shape ``(k,)``."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project ``x`` ``(N, d)`` onto the components, in units of the fitted standard
        deviation (so the fitted sample has unit variance along every kept direction)."""
        return (x - self.mean) @ self.components.T / self.scale


def fit_pca(x: np.ndarray, k: int = PCA_COMPONENTS) -> PCA:
    """Fit a whitening PCA with ``min(k, d, N - 1)`` components on ``x`` ``(N, d)``.

    Directions of (near) zero variance keep a floor on their scale of ``1e-6`` times the largest
    standard deviation (or 1 for a constant sample), so that a target varying where the source is
    constant reads as a large but finite difference, not an overflow.
    """
    n, d = x.shape
    k = max(1, min(k, d, n - 1))
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    std = singular[:k] / np.sqrt(max(n - 1, 1))
    floor = 1e-6 * std[0] if std[0] > 0 else 1.0
    return PCA(mean=mean, components=vt[:k], scale=np.maximum(std, floor))


# --------------------------------------------------------------------------------------------
# MMD permutation test
# --------------------------------------------------------------------------------------------


@dataclass
class MMDResult:
    """Kernel two-sample test (Gretton et al. 2012) with an RBF kernel."""

    mmd2: float
    """Unbiased estimate of MMD² (dimensionless: kernel values lie in [0, 1]); can be < 0."""
    p_value: float
    """Permutation p-value ``(1 + #{permuted MMD² >= observed}) / (1 + permutations)``."""
    bandwidth: float
    """RBF bandwidth σ in feature units: ``k(a, b) = exp(-|a - b|² / (2 σ²))``."""
    permutations: int
    """Number of random relabellings used for the p-value."""
    n_a: int
    """Samples in the first group."""
    n_b: int
    """Samples in the second group."""

    def to_dict(self) -> dict:
        """JSON-able dict of the fields."""
        return asdict(self)


def squared_distances(z: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances of the rows of ``z`` ``(N, d)``, shape ``(N, N)``."""
    sq = np.einsum("ij,ij->i", z, z)
    # in place: at N = 4000 each N × N temporary is 128 MB, and memory traffic, not the
    # product, is what this step costs
    d2 = z @ z.T
    d2 *= -2.0
    d2 += sq[:, None]
    d2 += sq[None, :]
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def median_bandwidth(z: np.ndarray, distances: np.ndarray | None = None) -> float:
    """Median heuristic: the median Euclidean distance between distinct rows of ``z``.

    ``distances``: ``squared_distances(z)`` when the caller has it (it is the costly part, and
    the MMD test needs the same matrix). Falls back to 1.0 when that median is 0 (more than
    half the pairs coincide).
    """
    d2 = squared_distances(z) if distances is None else distances
    return _median_of_upper(d2)


def _median_of_upper(d2: np.ndarray) -> float:
    """sqrt of the median of the strictly upper triangle of ``d2``, or 1.0 when that is 0."""
    n = d2.shape[0]
    if n < 2:
        return 1.0
    # row by row: the same values as d2[np.triu_indices(n, 1)] without the two index arrays
    upper = np.concatenate([d2[i, i + 1:] for i in range(n - 1)])
    median = float(np.sqrt(np.median(upper)))
    return median if median > 0 else 1.0


def unbiased_mmd2(kernel: np.ndarray, in_a: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for one or many labellings of a pooled sample, from one kernel matrix.

    Args:
        kernel: symmetric ``(N, N)`` kernel matrix of the pooled sample.
        in_a: boolean ``(N,)`` or ``(P, N)``: which samples form group A in each labelling
            (the others form group B); every labelling has the same group sizes.

    Returns:
        MMD² per labelling, shape ``()`` or ``(P,)``.
    """
    a = np.atleast_2d(in_a).astype(kernel.dtype)
    b = 1.0 - a
    m, n = a[0].sum(), b[0].sum()
    diag = np.diag(kernel)
    ka = a @ kernel
    # b = 1 - a, so b @ kernel is the column sums minus a @ kernel: one P × N × N product
    # instead of two (the permutations' whole cost)
    kb = kernel.sum(axis=0)[None, :] - ka
    # sums over ordered pairs i != j: the quadratic form minus the diagonal terms
    within_a = np.einsum("pi,pi->p", ka, a) - a @ diag
    within_b = np.einsum("pi,pi->p", kb, b) - b @ diag
    between = np.einsum("pi,pi->p", ka, b)
    mmd2 = within_a / (m * (m - 1)) + within_b / (n * (n - 1)) - 2.0 * between / (m * n)
    return mmd2 if np.ndim(in_a) == 2 else mmd2[0]


def mmd_test(
    a: np.ndarray,
    b: np.ndarray,
    *,
    permutations: int = 200,
    bandwidth: float | None = None,
    seed: int = 0,
    distances: np.ndarray | None = None,
) -> MMDResult:
    """RBF-kernel MMD two-sample test with a permutation p-value.

    Args:
        a, b: samples ``(m, d)`` and ``(n, d)``, each with at least 2 rows.
        permutations: random relabellings of the pooled sample, default 200. The smallest
            possible p-value is ``1 / (1 + permutations)``.
        bandwidth: RBF σ in feature units; default ``None`` uses the median heuristic on the
            pooled sample (:func:`median_bandwidth`).
        seed: seeds the permutations (a NumPy ``Generator``), default 0.
        distances: ``squared_distances`` of the pooled sample ``[a; b]`` when the caller has
            it already (e.g. a slice of a larger matrix); default None computes it.

    The kernel matrix is built once and every relabelling is a row of a 0/1 matrix, so the
    permutation distribution costs two matrix products (about ``2 P N²`` flops).
    """
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("mmd_test() needs at least 2 samples per group.")
    z = np.concatenate([a, b]).astype(np.float64)
    m, total = a.shape[0], z.shape[0]
    d2 = squared_distances(z) if distances is None else distances
    if bandwidth is None:
        bandwidth = _median_of_upper(d2)
    kernel = np.multiply(d2, -1.0 / (2.0 * bandwidth**2))
    np.exp(kernel, out=kernel)
    observed_mask = np.zeros(total, dtype=bool)
    observed_mask[:m] = True
    observed = float(unbiased_mmd2(kernel, observed_mask))
    rng = np.random.default_rng(seed)
    order = rng.permuted(np.tile(np.arange(total), (permutations, 1)), axis=1)
    masks = np.zeros((permutations, total), dtype=bool)
    np.put_along_axis(masks, order[:, :m], True, axis=1)
    null = unbiased_mmd2(kernel, masks)
    # a small tolerance so that a relabelling equal to the observed one (up to summation order)
    # counts as ">=", as it must for a valid p-value
    exceed = int(np.sum(null >= observed - 1e-12))
    return MMDResult(
        mmd2=observed,
        p_value=(1 + exceed) / (1 + permutations),
        bandwidth=float(bandwidth),
        permutations=int(permutations),
        n_a=int(m),
        n_b=int(total - m),
    )


# --------------------------------------------------------------------------------------------
# Classifier two-sample test
# --------------------------------------------------------------------------------------------


@dataclass
class C2STResult:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): out-of-fold scores of a logistic
    regression on ``[z, z²]`` (so that a change of spread, not only of mean, is visible to it)."""

    auc: float
    """Out-of-fold ROC AUC of telling group B from group A; 0.5 = chance."""
    accuracy: float
    """Out-of-fold balanced accuracy (mean of the two per-group accuracies); 0.5 = chance."""
    p_value: float
    """Permutation p-value of the out-of-fold AUC, ``(1 + #{permuted >= observed}) / (1 + P)``."""
    proxy_a_distance: float
    """Proxy A-distance ``2 (1 - 2 err)`` with ``err = 1 - accuracy``, clipped at 0; in [0, 2]."""
    folds: int
    """Number of stratified folds (by default one per sample of the smaller group)."""
    permutations: int
    """Number of label permutations P behind the p-value."""
    n_a: int
    """Samples in the first group."""
    n_b: int
    """Samples in the second group."""

    def to_dict(self) -> dict:
        """JSON-able dict of the fields."""
        return asdict(self)


def stratified_folds(label: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index ``0..folds-1`` per sample: each group is shuffled and dealt round-robin, so
    every fold holds each group in its overall proportion (within one sample)."""
    fold = np.empty(label.shape[0], dtype=int)
    for value in np.unique(label):
        members = rng.permutation(np.flatnonzero(label == value))
        fold[members] = (np.arange(members.size) + rng.integers(folds)) % folds
    return fold


def c2st(
    a: np.ndarray,
    b: np.ndarray,
    *,
    folds: int | None = None,
    permutations: int = 200,
    seed: int = 0,
) -> C2STResult:
    """Classifier two-sample test from out-of-fold scores of a logistic-regression classifier.

    Args:
        a, b: samples ``(m, d)`` and ``(n, d)``; each needs at least 2 rows (and at least
            ``folds`` when given).
        folds: stratified folds; default None = ``min(m, n)``, so that every fold holds one
            sample of the smaller group (leave-one-pair-out when ``m = n``).
        permutations: label permutations for the p-value, default 200.
        seed: seeds the folds and the permutations (a NumPy ``Generator``), default 0.

    The classifier is L2-penalised logistic regression (penalty 1 on the weights, none on the
    intercept, as scikit-learn's ``C = 1``) on the features and their squares, standardised on
    the pooled sample (no labels involved), fitted by ONE Newton step from the prior log-odds.
    That step's Hessian does not depend on the labels, so out-of-fold scores are a fixed linear
    map of the labels, and the p-value is a permutation p-value on the out-of-fold AUC,
    ``(1 + #{permuted AUC >= observed}) / (1 + permutations)``, for the cost of one matrix
    product. (Mann–Whitney or binomial p-values on pooled out-of-fold predictions treat them as
    independent; they are not — each sample trains the models that score the others — and
    such tests reject about twice as often as they should on identical distributions.)
    Labels are permuted within folds, so every permutation keeps the folds' stratification.

    Why as many folds as the smaller group has samples: a C2ST's AUC is that of a classifier
    trained on the samples outside the fold, and it grows with them; with one sample of the
    smaller group per fold each classifier trains on all but about two samples, the most the
    data allow without scoring a sample by a model that saw it. (mnist1d under noise 0.6 at
    about 180 per side, whitened to 40 dimensions: AUC - 0.5 = 0.177 ± 0.039 with 5 folds,
    0.192 ± 0.036 with one pair per fold; its spread over measurement seeds of one data draw
    fell from 0.023 to 0.016, as the fold split matters less.) Each fold still holds both
    groups in proportion, which leave-one-out does not: removing one sample tilts the training
    balance against its own group, so its pooled out-of-fold AUC falls below 0.5 on identical
    distributions (0.471 ± 0.004 against 0.492 ± 0.005 for one pair per fold; two draws of
    N(0, I_5), 60 per side, 300 trials). The fold scores come in closed form from the
    full-sample Hessian (Woodbury, :func:`_out_of_fold_scores`), so many folds cost no more
    than five.
    """
    m, n = a.shape[0], b.shape[0]
    folds = min(m, n) if folds is None else folds
    if min(m, n) < max(folds, 2):
        raise ValueError(f"c2st() needs at least {max(folds, 2)} samples per group "
                         "(one per fold).")
    z = np.concatenate([a, b]).astype(np.float64)
    z = np.concatenate([z, z**2], axis=1)
    std = z.std(axis=0)
    z = (z - z.mean(axis=0)) / np.where(std > 0, std, 1.0)
    design = np.concatenate([z, np.ones((m + n, 1))], axis=1)
    penalty = np.ones(design.shape[1])
    penalty[-1] = 1e-9  # no penalty on the intercept; the floor keeps the system invertible
    label = np.concatenate([np.zeros(m), np.ones(n)])
    prior = n / (m + n)
    weight = prior * (1.0 - prior)
    rng = np.random.default_rng(seed)
    fold = stratified_folds(label, folds, rng)
    # labels are permuted within each fold: under the null that is exact (a fold's members are
    # exchangeable), and it keeps every fold stratified as the observed one is, which matters:
    # unbalanced folds pull the out-of-fold AUC below 0.5 and would make the test too liberal
    relabelled = np.empty((m + n, permutations + 1))
    relabelled[:, 0] = label
    for k in range(folds):
        members = np.flatnonzero(fold == k)
        block = np.tile(label[members], (permutations, 1))
        relabelled[members, 1:] = rng.permuted(block, axis=1).T
    scores = _out_of_fold_scores(design, penalty, weight, fold, relabelled - prior)
    ranks = stats.rankdata(scores, axis=0)
    positives = relabelled.astype(bool)
    auc_all = ((ranks * positives).sum(axis=0) - n * (n + 1) / 2.0) / (m * n)
    auc = float(auc_all[0])
    # the step starts at the prior log-odds, so score > 0 means "more likely B than the prior"
    predicted = scores[:, 0] > 0
    accuracy = 0.5 * (float(np.mean(~predicted[:m])) + float(np.mean(predicted[m:])))
    exceed = int(np.sum(auc_all[1:] >= auc - 1e-12))
    return C2STResult(
        auc=auc,
        accuracy=accuracy,
        p_value=(1 + exceed) / (1 + permutations),
        proxy_a_distance=max(0.0, 2.0 * (1.0 - 2.0 * (1.0 - accuracy))),
        folds=int(folds),
        permutations=int(permutations),
        n_a=int(m),
        n_b=int(n),
    )


def _out_of_fold_scores(
    design: np.ndarray, penalty: np.ndarray, weight: float, fold: np.ndarray,
    centred: np.ndarray,
) -> np.ndarray:
    """One Newton step's out-of-fold scores for every column of labels ``centred`` (label minus
    prior, ``(N, L)``): fold F's rows get ``X_F H_F⁻¹ X_trainᵀ c_train``, with
    ``H_F = w X_trainᵀ X_train + diag(penalty)``.

    In closed form from the full Hessian ``H = H_F + w X_Fᵀ X_F`` (Woodbury), with
    ``A = H⁻¹``, ``G_FF = X_F A X_Fᵀ`` and ``M_F = (I / w - G_FF)⁻¹``:
    ``X_F H_F⁻¹ = M_F X_F A / w``, hence scores ``M_F ((X A Xᵀ c)_F - G_FF c_F) / w``. That
    costs one ``(p × p)`` solve and one ``O(N p L)`` product, whatever the number of folds,
    plus one small ``|F| × |F|`` solve per fold (batched over folds of equal size).
    """
    hessian = weight * design.T @ design + np.diag(penalty)
    xa = np.linalg.solve(hessian, design.T).T  # X A (A is symmetric)
    full = xa @ (design.T @ centred)  # (X A Xᵀ c): scores of a model fitted on everything
    scores = np.empty_like(centred)
    order = np.argsort(fold, kind="stable")
    sizes = np.bincount(fold)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for size in np.unique(sizes[sizes > 0]):
        chosen = np.flatnonzero(sizes == size)
        rows = order[starts[chosen][:, None] + np.arange(size)[None, :]]  # (folds, size)
        g = np.einsum("fip,fjp->fij", xa[rows], design[rows])  # G_FF per fold
        inner = np.eye(size)[None] / weight - g
        rhs = full[rows] - np.einsum("fij,fjl->fil", g, centred[rows])
        scores[rows] = np.linalg.solve(inner, rhs) / weight
    return scores


# --------------------------------------------------------------------------------------------
# Label shift
# --------------------------------------------------------------------------------------------


@dataclass
class LabelShiftResult:
    """Chi-squared test of equal class proportions over the labels both sides share."""

    labels: list[str]
    """The shared labels that occur on at least one side, in table order."""
    counts_source: list[int]
    """Source samples per shared label."""
    counts_target: list[int]
    """Target samples per shared label."""
    chi2: float | None
    """Pearson χ² statistic of the 2 × k table; ``None`` with fewer than two labels."""
    dof: int
    """Degrees of freedom ``k - 1``."""
    p_value: float | None
    """p-value of χ²; ``None`` with fewer than two labels."""
    cramers_v: float | None
    """Effect size ``sqrt(χ² / N)`` (for a 2 × k table), in [0, 1]; ``None`` when undefined."""

    def to_dict(self) -> dict:
        """JSON-able dict of the fields."""
        return asdict(self)


def label_shift_test(
    labels: list[str], counts_source: list[int], counts_target: list[int]
) -> LabelShiftResult:
    """χ² test on the 2 × k contingency table of class counts (no continuity correction).

    Labels with no sample on either side are dropped first, since they carry no information and
    would make an expected count zero.
    """
    keep = [i for i in range(len(labels)) if counts_source[i] + counts_target[i] > 0]
    labels = [labels[i] for i in keep]
    source = [int(counts_source[i]) for i in keep]
    target = [int(counts_target[i]) for i in keep]
    chi2 = p_value = cramers_v = None
    if len(keep) >= 2 and sum(source) > 0 and sum(target) > 0:
        table = np.array([source, target])
        result = stats.chi2_contingency(table, correction=False)
        chi2, p_value = float(result[0]), float(result[1])
        cramers_v = float(np.sqrt(chi2 / table.sum()))
    return LabelShiftResult(
        labels=labels,
        counts_source=source,
        counts_target=target,
        chi2=chi2,
        dof=max(len(keep) - 1, 0),
        p_value=p_value,
        cramers_v=cramers_v,
    )
