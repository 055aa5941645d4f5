"""Transferability: how well would a trunk's features serve a target task, before fine-tuning?

Every score reads the target's training samples and higher is better for all of them (the
functions live in :mod:`tlroutes.measure.scores`):

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
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.measure.scores import h_score, knn_hits, leep, linear_probe_hits, logme, nce
from tlroutes.problem import Problem

#: Scores whose ranking is compared by :func:`rank_trunks`, in table order.
SCORES: tuple[str, ...] = ("logme", "h_score", "knn", "linear_probe", "leep", "nce")

#: Pairs of scores whose candidate rankings have a Kendall τ below this raise a warning.
KENDALL_WARN_BELOW = 0.5

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
    if target.unlabelled:
        raise DataError(f"'{target.name}' holds no labels, but ranking trunks for it needs "
                        "them (LogME, H-score, the probes, LEEP and NCE score features against "
                        "the target's labels). Give a labelled target, or inspect without "
                        "--candidate.")
    rng = np.random.default_rng(seed)
    x, y_all = target.train.x, target.train.y
    keep = np.arange(len(target.train))
    if keep.size > max_samples:
        keep = np.sort(rng.choice(keep.size, size=max_samples, replace=False))
    # lazily read inputs stay lazy: _apply reads them one batch at a time
    x = x.subset(torch.as_tensor(keep)) if isinstance(x, LazyInputs) else x[torch.as_tensor(keep)]
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
