r"""PADA: Partial Adversarial Domain Adaptation (Cao, Ma, Long & Wang, ECCV 2018).

In *partial* domain adaptation the target holds only some of the source's classes. Plain DANN
aligns the whole target distribution with the whole source distribution, so target samples are
pulled towards source classes the target does not have (negative transfer). PADA weighs every
source class by how much the target's predictions use it,

.. math::
    \gamma = \frac{1}{n_t}\sum_{j=1}^{n_t} \operatorname{softmax}\big(G_y(G_f(x^t_j)) / T\big),
    \qquad \gamma \leftarrow \gamma / \max_k \gamma_k,

and applies :math:`\gamma_{y_i}` to each source sample in both the classification loss and the
source side of the domain-adversarial loss (the target side is unweighted):

.. math::
    \mathcal{L} = \frac{1}{n_s}\sum_{i=1}^{n_s}\gamma_{y_i}\,
        \mathrm{CE}\big(G_y(G_f(x^s_i)), y_i\big)
      + \lambda\,\tfrac12\Big[\frac{1}{n_s}\sum_{i=1}^{n_s}\gamma_{y_i}\,
        \mathrm{BCE}\big(D(R(f^s_i)), 1\big)
      + \frac{1}{n_t}\sum_{j=1}^{n_t}\mathrm{BCE}\big(D(R(f^t_j)), 0\big)\Big],

with :math:`D` the domain discriminator and :math:`R` the gradient reversal layer of DANN
(:mod:`tlroutes.objectives.alignment.dann`). Absent classes get small :math:`\gamma`, so their
source samples barely enter the adversarial game. The paper updates :math:`\gamma` from the
target's predictions every few hundred iterations (its code: 500) with :math:`T = 1`; TLlib's
re-implementation uses a sharper :math:`T = 0.1`. Paper: Z. Cao, L. Ma, M. Long, J. Wang,
"Partial Adversarial Domain Adaptation", ECCV 2018.

PADA needs each source sample's *label* for its weight, which the alignment family's call
``loss(f_s, f_t, g_s, g_t)`` does not pass, so these are plain modules used by the partial
variant of Domain Adaptation (:mod:`tlroutes.routes.da_variants.partial`), not registry entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.checks import positive
from tlroutes.objectives.alignment import checks
from tlroutes.objectives.alignment.adversarial import (
    DomainDiscriminator,
    WarmStartGradientReverse,
    domain_bce,
)

__all__ = ["pada_class_weights", "weighted_cross_entropy", "PartialAdversarialLoss"]


def pada_class_weights(target_logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""PADA's class weights from the target's logits: :math:`\gamma/\max\gamma`.

    Args:
        target_logits: ``(n_t, K)`` logits of (all) the target's training samples.
        temperature: softmax temperature T (> 0). Default 1.0, as in the paper.

    Returns:
        ``(K,)`` float weights in (0, 1], the largest exactly 1; no gradient.
    """
    positive("temperature", temperature)
    if target_logits.dim() != 2 or target_logits.shape[0] == 0:
        raise ValueError(f"target_logits must be (n_t > 0, K), got {tuple(target_logits.shape)}")
    with torch.no_grad():
        gamma = F.softmax(target_logits.float() / temperature, dim=1).mean(dim=0)
        return gamma / gamma.max()


def weighted_cross_entropy(logits: Tensor, labels: Tensor, class_weight: Tensor) -> Tensor:
    r"""PADA's source classification loss :math:`\frac{1}{n_s}\sum_i\gamma_{y_i}\mathrm{CE}_i`.

    Divided by the batch size, not by :math:`\sum_i\gamma_{y_i}` (PyTorch's ``weight=`` mean),
    as in the paper: a batch of absent-class samples contributes little, instead of being
    rescaled back up.
    """
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    return (class_weight.to(per_sample.dtype)[labels] * per_sample).mean()


class PartialAdversarialLoss(nn.Module):
    r"""PADA's class-weighted domain-adversarial loss (source side weighted by :math:`\gamma_{y}`).

    .. math::
        \mathcal{L} = \tfrac12\Big[\tfrac{1}{n_s}\sum_i \gamma_{y_i}\mathrm{BCE}(D(R(f^s_i)), 1)
                    + \tfrac{1}{n_t}\sum_j \mathrm{BCE}(D(R(f^t_j)), 0)\Big]

    ``class_weight`` (the persistent ``(K,)`` buffer :math:`\gamma`, all ones at first: plain
    DANN) is set with :meth:`set_class_weight`, e.g. from :func:`pada_class_weights` once an
    epoch; being a buffer, it is saved and resumed with the module. ``last_accuracy`` holds the
    discriminator's domain accuracy after each call, as for DANN.

    Args:
        features: feature width D.
        classes: number of source classes K.
        max_steps: steps over which the reversal coefficient warms up (DANN's schedule).
            Default 1000.
        gamma: warm-up steepness. Default 10.0.
        hidden, depth, batch_norm: the discriminator's (see :class:`DomainDiscriminator`).
            Defaults 256, 2, True.

    Shape:
        ``f_s`` ``(B_s, D)``, ``f_t`` ``(B_t, D)``, ``y_s`` ``(B_s,)`` long in ``[0, K)`` →
        scalar.
    """

    class_weight: Tensor

    def __init__(self, features: int, classes: int, *, max_steps: int = 1000,
                 gamma: float = 10.0, hidden: int = 256, depth: int = 2,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.discriminator = DomainDiscriminator(features, hidden=hidden, depth=depth,
                                                 batch_norm=batch_norm)
        self.grl = WarmStartGradientReverse(max_steps=max_steps, gamma=gamma)
        self.register_buffer("class_weight", torch.ones(classes), persistent=True)
        self.last_accuracy: float | None = None

    def set_class_weight(self, weight: Tensor) -> None:
        """Replace :math:`\\gamma` (``(K,)``, e.g. from :func:`pada_class_weights`)."""
        if weight.shape != self.class_weight.shape:
            raise ValueError(f"class weights must have shape {tuple(self.class_weight.shape)}, "
                             f"got {tuple(weight.shape)}")
        with torch.no_grad():
            self.class_weight.copy_(weight.to(self.class_weight))

    def forward(self, f_s: Tensor, f_t: Tensor, y_s: Tensor) -> Tensor:
        f_s, f_t = checks.feature_pair(f_s, f_t)
        logits = self.discriminator(self.grl(torch.cat([f_s, f_t], dim=0)))
        # Target rows weigh 1: only the source side is re-weighted (the paper's Eq. 4).
        weight = torch.cat([self.class_weight[y_s],
                            torch.ones(f_t.shape[0], device=f_t.device)]).to(logits.dtype)
        loss, accuracy = domain_bce(logits, f_s.shape[0], weight)
        self.last_accuracy = float(accuracy)
        return loss
