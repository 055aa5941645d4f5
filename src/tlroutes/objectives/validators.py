"""Label-free validation scores: pick checkpoints and hyper-parameters without target labels.

In unsupervised domain adaptation the target has no labels, so the usual validation accuracy is not
available. These scores look only at the model's predictions on (unlabelled) target data.

**Convention: higher is better** for every score in :data:`VALIDATORS` and for
:func:`information_maximization`, :func:`soft_neighborhood_density` and :func:`negative_entropy`.
The one exception is :func:`entropy`, the plain mean prediction entropy, where **lower** is better
(it is exported under its own name because it is a familiar diagnostic; use
:func:`negative_entropy` to rank with "higher is better").

Every function takes a ``(N, K)`` tensor (or array) of logits, or of probabilities with
``is_probs=True``, and returns a Python float. They run without gradients, in float64 (float32 on
MPS), on the tensor's device. Scores are comparable between models only on the same target samples.

=================================  ================================================  ==========
score                              measures                                          best
=================================  ================================================  ==========
``information_maximization``       confident *and* class-balanced predictions        higher
``soft_neighborhood_density``      target points form dense, consistent clusters     higher
``negative_entropy``               confident predictions                             higher
``entropy``                        uncertainty of the predictions                    **lower**
=================================  ================================================  ==========

Caveat: entropy alone rewards a collapsed model that predicts one class with certainty; IM
penalises that collapse through its diversity term, and SND was proposed to be more robust still.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tlroutes.checks import positive
from tlroutes.errors import DataError

__all__ = [
    "information_maximization",
    "soft_neighborhood_density",
    "entropy",
    "negative_entropy",
    "VALIDATORS",
]


def _scores(x, name: str = "logits") -> Tensor:
    """``x`` as a detached 2-D floating tensor (float64 except on MPS)."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    x = x.detach()
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(
            f"{name} must have shape (N, K) with N >= 1 samples and K >= 1 classes, got "
            f"{tuple(x.shape)}."
        )
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    x = x.to(dtype)
    if not torch.isfinite(x).all():
        raise DataError(f"{name} contain NaN or Inf; check the model's outputs.")
    return x


def _probabilities(x, is_probs: bool) -> Tensor:
    x = _scores(x, "probs" if is_probs else "logits")
    if not is_probs:
        return F.softmax(x, dim=1)
    if (x < 0).any() or not torch.allclose(x.sum(1), torch.ones_like(x[:, 0]), atol=1e-4):
        raise DataError(
            "is_probs=True but the rows are not probability vectors (non-negative, summing to 1); "
            "pass logits with is_probs=False."
        )
    return x


def _row_entropy(p: Tensor) -> Tensor:
    return -torch.special.xlogy(p, p).sum(dim=1)


@torch.no_grad()
def information_maximization(logits, *, is_probs: bool = False) -> float:
    r"""Mutual information between input and predicted class: higher is better.

    .. math::
        \mathrm{IM} = H\Big(\frac1N\sum_i p_i\Big) - \frac1N\sum_i H(p_i)

    (entropies in nats). The first term is high when the classes are predicted in balanced
    proportions, the second low when each prediction is confident, so IM lies in ``[0, log K]``:
    0 for uniform predictions (and for a model that always predicts the same class with certainty),
    ``log K`` for confident predictions spread evenly over the ``K`` classes. This is the
    regularised-information-maximisation objective of Gomes, Krause & Perona, "Discriminative
    Clustering by Regularized Information Maximization", NeurIPS 2010, also SHOT's IM loss (Liang
    et al., ICML 2020), which minimises ``-IM``.

    Args:
        logits: ``(N, K)`` logits (or probabilities with ``is_probs=True``).
        is_probs: the input already holds softmax probabilities. Default False.
    """
    p = _probabilities(logits, is_probs)
    mean_p = p.mean(dim=0, keepdim=True)
    return float(_row_entropy(mean_p)[0] - _row_entropy(p).mean())


@torch.no_grad()
def soft_neighborhood_density(
    logits, temperature: float = 0.05, *, is_probs: bool = False, chunk_size: int = 1024
) -> float:
    r"""Soft Neighborhood Density (SND): higher is better.

    Following Saito et al., "Tune it the Right Way: Unsupervised Validation of Domain Adaptation
    via Soft Neighborhood Density", ICCV 2021, on the softmax outputs :math:`p_i`:

    1. L2-normalise: :math:`\hat p_i = p_i / \lVert p_i \rVert`;
    2. cosine similarities :math:`M_{ij} = \hat p_i^\top \hat p_j`, self-similarity excluded;
    3. soft neighbour distribution of each point,
       :math:`P_{ij} = \exp(M_{ij}/\tau) / \sum_{j' \ne i} \exp(M_{ij'}/\tau)` for
       :math:`j \ne i`;
    4. :math:`\mathrm{SND} = \frac1N \sum_i H(P_{i\cdot})
       = -\frac1N \sum_i \sum_{j \ne i} P_{ij}\log P_{ij}`.

    A high value means each point has many close neighbours (dense, well-clustered predictions).
    The self term is removed exactly (its logit set to −∞); the authors' code sets it to
    :math:`-1/\tau`, which differs by a negligible amount. SND lies in ``[0, log(N-1)]``, so only
    compare scores computed on the same number of samples. Memory is ``chunk_size × N``.

    Args:
        logits: ``(N, K)`` logits (or probabilities with ``is_probs=True``), N >= 2.
        temperature: τ. Default 0.05 (the paper's).
        is_probs: the input already holds softmax probabilities. Default False.
        chunk_size: rows of the similarity matrix computed at a time. Default 1024.
    """
    positive("temperature", temperature)
    p = _probabilities(logits, is_probs)
    n = p.shape[0]
    if n < 2:
        raise DataError("soft_neighborhood_density needs at least 2 samples (neighbours).")
    p_hat = F.normalize(p, dim=1)
    total = p.new_zeros(())
    for start in range(0, n, chunk_size):
        rows = p_hat[start : start + chunk_size]
        sim = rows @ p_hat.T / temperature
        idx = torch.arange(rows.shape[0], device=p.device)
        sim[idx, idx + start] = -math.inf
        log_p = F.log_softmax(sim, dim=1)
        probs = log_p.exp()
        # exp(-inf) = 0 and 0 * -inf would be NaN: the self entry contributes nothing.
        total += -(probs * log_p.masked_fill(probs == 0, 0.0)).sum()
    return float(total / n)


@torch.no_grad()
def entropy(logits, *, is_probs: bool = False) -> float:
    r"""Mean prediction entropy :math:`\frac1N\sum_i H(p_i)` in nats: **lower is better**.

    Ranges over ``[0, log K]``: 0 for one-hot predictions, ``log K`` for uniform ones. For a
    "higher is better" score use :func:`negative_entropy`. See the module caveat about collapse.
    """
    return float(_row_entropy(_probabilities(logits, is_probs)).mean())


@torch.no_grad()
def negative_entropy(logits, *, is_probs: bool = False) -> float:
    """``-entropy(logits)``: the entropy criterion oriented so that higher is better."""
    return -entropy(logits, is_probs=is_probs)


VALIDATORS: dict[str, Callable[..., float]] = {
    "im": information_maximization,
    "snd": soft_neighborhood_density,
    "neg_entropy": negative_entropy,
}
"""Label-free scores by name, all oriented so that **higher is better**."""
