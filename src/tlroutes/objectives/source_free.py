r"""Source-free domain adaptation: SHOT's objective (Liang, Hu & Feng, ICML 2020).

SHOT ("Do We Really Need to Access the Source Data? Source Hypothesis Transfer for Unsupervised
Domain Adaptation") adapts a trained source model to an unlabelled target without the source
data. The source *hypothesis* (the classifier head) is kept frozen; the feature extractor (stem
and trunk) is trained so that the target's features fit it, with two terms:

1. **Information maximisation** (:func:`information_maximization_loss`): confident predictions
   (low per-sample entropy, :math:`\mathcal L_{ent}`) that together cover the classes evenly
   (high entropy of the mean prediction, :math:`\mathcal L_{div}` is its negative):

   .. math::
       \mathcal L_{IM} = \underbrace{\frac1N\sum_i H(p_i)}_{\mathcal L_{ent}}
       \; \underbrace{- \, H\Big(\frac1N \sum_i p_i\Big)}_{\mathcal L_{div}}.

   It is the negative of :func:`tlroutes.objectives.validators.information_maximization`, the
   label-free selection score (that one is a float without gradients, this one a loss).
2. **Self-supervised pseudo-labels** (:func:`centroid_pseudo_labels`), recomputed once per
   epoch over the whole target training set and used with weight :math:`\beta` in a
   cross-entropy term: :math:`\mathcal L = \mathcal L_{IM} + \beta\,\mathrm{CE}(g, \hat y)`.

The source model itself is trained with label smoothing (:func:`smoothed_cross_entropy`,
:math:`\varepsilon = 0.1`), which the paper reports makes its features more transferable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.checks import non_negative, positive_int
from tlroutes.errors import ConfigError, DataError

__all__ = [
    "LABEL_SMOOTHING",
    "PSEUDO_LABEL_WEIGHT",
    "SHOTLoss",
    "centroid_pseudo_labels",
    "information_maximization_loss",
    "smoothed_cross_entropy",
]

LABEL_SMOOTHING = 0.1
"""SHOT's label-smoothing ε for the source model (the paper's value)."""

PSEUDO_LABEL_WEIGHT = 0.3
"""SHOT's β, the weight of the pseudo-label cross-entropy (the paper's value for digits and
Office)."""

_TINY = 1e-12  # keeps log() of a mean probability finite; far below any probability that matters


def _logits(x: Tensor, name: str = "logits") -> Tensor:
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"{name} must have shape (N, K) with N >= 1 and K >= 1, got "
                        f"{tuple(x.shape)}.")
    return x


def information_maximization_loss(logits: Tensor, *, diversity: bool = True
                                  ) -> tuple[Tensor, Tensor, Tensor]:
    r"""SHOT's information-maximisation loss of a batch of logits, differentiable.

    .. math::
        \mathcal L_{IM} = \mathcal L_{ent} + \mathcal L_{div}, \quad
        \mathcal L_{ent} = \frac1N\sum_i H(p_i), \quad
        \mathcal L_{div} = \sum_k \bar p_k \log \bar p_k = -H(\bar p), \quad
        \bar p = \frac1N\sum_i p_i,

    with :math:`p_i = \mathrm{softmax}(g_i)` and entropies in nats. It lies in
    :math:`[-\log K, \log K]`: :math:`-\log K` for one-hot predictions spread evenly over the
    :math:`K` classes, 0 for uniform predictions and for a collapse onto one class (confident but
    not diverse), :math:`\log K` at most. Per-sample entropies are taken from ``log_softmax``
    (exact, no ``log 0``).

    Args:
        logits: ``(N, K)`` logits.
        diversity: include :math:`\mathcal L_{div}`. Default True; False leaves plain entropy
            minimisation, which collapses onto few classes (SHOT's ablation).

    Returns:
        ``(loss, ent, div)``: the total and its two terms (``div`` is 0 without diversity).
    """
    logits = _logits(logits)
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    ent = -(p * log_p).sum(dim=1).mean()
    if not diversity:
        return ent, ent, ent.new_zeros(())
    mean_p = p.mean(dim=0)
    div = (mean_p * mean_p.clamp_min(_TINY).log()).sum()
    return ent + div, ent, div


@torch.no_grad()
def centroid_pseudo_labels(features: Tensor, logits: Tensor, rounds: int = 1) -> Tensor:
    r"""SHOT's self-supervised pseudo-labels: weighted k-means-like clustering of the features.

    With the features :math:`f_i` of every target sample and its softmax prediction
    :math:`\delta_k(g_i)` for class :math:`k`:

    1. class centroids weighted by the predictions,
       :math:`c_k^{(0)} = \sum_i \delta_k(g_i) f_i \,/\, \sum_i \delta_k(g_i)`;
    2. nearest-centroid labels in cosine distance,
       :math:`\hat y_i = \arg\min_k D_f(f_i, c_k^{(0)})`, :math:`D_f(a, b) = 1 - \cos(a, b)`;
    3. ``rounds`` refinements (the paper: one): centroids of the hard labels,
       :math:`c_k^{(1)} = \sum_i 1[\hat y_i = k] f_i \,/\, \sum_i 1[\hat y_i = k]`, and the
       nearest-centroid labels again. A class no sample was assigned to has no centroid in the
       refinement and receives no sample (its centroid would be the zero vector, whose cosine
       distance is undefined).

    Args:
        features: ``(N, D)`` trunk features of the whole target training set.
        logits: ``(N, K)`` the frozen head's logits of the same samples.
        rounds: refinement rounds from hard labels (>= 0). Default 1, the paper's.

    Returns:
        ``(N,)`` long class indices.
    """
    _logits(logits)
    if features.dim() != 2 or features.shape[0] != logits.shape[0]:
        raise DataError(f"features must have shape (N, D) with the logits' N = {logits.shape[0]}, "
                        f"got {tuple(features.shape)}.")
    rounds = positive_int("rounds", rounds, minimum=0)
    # float64: the centroids sum over the whole target set.
    f = F.normalize(features.double(), dim=1)
    weights = F.softmax(logits.double(), dim=1)
    labels = _nearest(f, weights)
    classes = logits.shape[1]
    for _ in range(rounds):
        labels = _nearest(f, F.one_hot(labels, classes).double())
    return labels


def _nearest(f: Tensor, weights: Tensor) -> Tensor:
    """Labels of the nearest (cosine) weighted centroid; classes of zero weight are skipped."""
    mass = weights.sum(dim=0)
    centroids = weights.T @ f / mass.clamp_min(_TINY)[:, None]
    # Cosine distance 1 - cos = the arg-max of the cosine; f is unit-norm already.
    cos = f @ F.normalize(centroids, dim=1).T
    cos[:, mass <= 0] = -torch.inf
    return cos.argmax(dim=1)


def smoothed_cross_entropy(logits: Tensor, target: Tensor,
                           epsilon: float = LABEL_SMOOTHING) -> Tensor:
    r"""Cross-entropy against label-smoothed targets, as SHOT trains its source model.

    .. math::
        \mathcal L = -\frac1N\sum_i \sum_k q_{ik} \log p_{ik}, \quad
        q_{ik} = (1 - \varepsilon)\,1[k = y_i] + \varepsilon / K,

    which is PyTorch's ``cross_entropy(label_smoothing=ε)``. Szegedy et al., CVPR 2016; SHOT
    uses it (ε = 0.1) for more discriminative, better clustered source features.

    Args:
        logits: ``(N, K)``. target: ``(N,)`` class indices.
        epsilon: ε in [0, 1). Default :data:`LABEL_SMOOTHING` (0.1).
    """
    if not 0 <= epsilon < 1:
        raise ConfigError(f"label smoothing epsilon must lie in [0, 1), got {epsilon}.")
    return F.cross_entropy(logits, target, label_smoothing=epsilon)


class SHOTLoss(nn.Module):
    r"""SHOT's target objective over a batch: ``im_weight`` × IM + β × CE to the pseudo-labels.

    .. math::
        \mathcal L = \lambda\,(\mathcal L_{ent} + \mathcal L_{div})
                     + \beta\,\mathrm{CE}(g, \hat y),

    with :math:`\hat y` from :func:`centroid_pseudo_labels`. Paper: Liang, Hu & Feng, "Do We
    Really Need to Access the Source Data? Source Hypothesis Transfer for Unsupervised Domain
    Adaptation", ICML 2020 (λ = 1, β = 0.3 for digits and Office).

    Args:
        beta: β, the weight of the pseudo-label cross-entropy (>= 0; 0 drops it). Default
            :data:`PSEUDO_LABEL_WEIGHT` (0.3).
        im_weight: λ, the weight of the IM loss (>= 0). Default 1.
        diversity: include :math:`\mathcal L_{div}`. Default True.

    Shape:
        ``logits`` ``(B, K)``, ``pseudo`` ``(B,)`` long → ``(loss, logs)``, logs holding the
        terms ``ent``, ``div`` and ``pseudo_ce`` (detached).
    """

    def __init__(self, beta: float = PSEUDO_LABEL_WEIGHT, im_weight: float = 1.0,
                 diversity: bool = True) -> None:
        super().__init__()
        self.beta = non_negative("beta", beta)
        self.im_weight = non_negative("im_weight", im_weight)
        if self.beta == 0 and self.im_weight == 0:
            raise ConfigError("SHOT needs beta or im_weight above 0: with both 0 nothing is "
                              "left to train on.")
        self.diversity = diversity

    def forward(self, logits: Tensor, pseudo: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        im, ent, div = information_maximization_loss(logits, diversity=self.diversity)
        ce = F.cross_entropy(logits, pseudo) if self.beta > 0 else logits.new_zeros(())
        loss = self.im_weight * im + self.beta * ce
        return loss, {"ent": ent.detach(), "div": div.detach(), "pseudo_ce": ce.detach()}
