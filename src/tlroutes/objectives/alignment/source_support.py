r"""Source support: which target samples have source samples like them (open-set adaptation).

In *open-set* domain adaptation the target holds classes the source lacks. A target sample of
such a class lies where the source has no density. A domain classifier :math:`D'` trained on
balanced batches (as many source as target samples) estimates

.. math::
    q(x) = P(\text{source} \mid x) = \frac{p_s(x)}{p_s(x) + p_t(x)},

and the target's density mixes the known classes and the new ones,
:math:`p_t = (1 - \pi)\,p_t^{known} + \pi\,p_t^{new}` (:math:`\pi` the share of new-class
samples). Where the known classes are aligned (:math:`p_t^{known} = p_s`) and no new class lies,
:math:`q = 1/(2 - \pi) \ge 1/2`; where only a new class lies, :math:`q = 0`. A target sample is
called *unsupported* when :math:`q(x) < \tau`, with :math:`\tau = 1/4` by default: halfway
between the two values, derived from the balanced batches, not tuned. It is the unknown class's
evidence in :mod:`tlroutes.routes.da_variants.open_set`'s ``support`` method.

:math:`D'` reads *detached* features: it measures the feature extractor and never trains it (the
non-adversarial domain discriminator of UAN — You, Long, Cao, Wang & Jordan, "Universal Domain
Adaptation", CVPR 2019 — whose output UAN combines with the prediction's entropy; here it is
used alone, since a classifier trained on the source alone can be confident far from every
source sample, along directions the source never varied).

Its loss is the domain cross-entropy averaged per domain (:func:`domain_bce`), so unequal
source and target batches weigh the same.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tlroutes.objectives.alignment import checks
from tlroutes.objectives.alignment.adversarial import DomainDiscriminator, domain_bce

__all__ = ["SUPPORT_THRESHOLD", "SourceSupport"]

SUPPORT_THRESHOLD = 0.25
"""The default τ: halfway between q = 0 (no source density) and q = 1/2 (the least an aligned
known sample has under balanced batches)."""


class SourceSupport(nn.Module):
    r"""A non-adversarial domain classifier on detached features, and the support it estimates.

    ``loss(f_s, f_t)`` trains the discriminator to tell the source (label 1) from the target
    (label 0) on ``f.detach()`` and returns the per-domain averaged cross-entropy; no gradient
    reaches the features. ``support(f)`` is :math:`q(f) = \sigma(D'(f))`;
    ``unsupported(f)`` is the boolean mask :math:`q(f) < \tau`. ``last_unsupported`` holds the
    share of the last call's target rows that were unsupported, ``last_accuracy`` the
    discriminator's domain accuracy.

    The discriminator is deliberately small — one hidden layer of 64 with dropout 0.5, no batch
    norm — because it labels the very target samples it trains on: one that can memorise them
    calls every target training sample target-only, known classes included. Measured on the
    open-set known-answer problem (``benchmarks/RESULTS.md``, "Open-set: source support"): with
    DANN's discriminator (256 × 2, batch norm) OS* fell to 0.66-0.98 over 8 seeds, with 256 × 2
    and dropout one seed's unknown recall fell to 0.44, with 64 × 1 and dropout every seed kept
    recall 1.00 and OS* 0.91-0.99.

    Args:
        features: feature width D.
        threshold: τ in (0, 1/2]. Default 0.25 (:data:`SUPPORT_THRESHOLD`).
        hidden, depth, batch_norm: the discriminator's (:class:`DomainDiscriminator`).
            Defaults 64, 1, False (dropout 0.5 instead of batch norm).

    Shape:
        ``f_s`` ``(B_s, D)``, ``f_t`` ``(B_t, D)`` → scalar; ``support(f)``: ``(B, D)`` →
        ``(B,)`` in (0, 1).
    """

    def __init__(self, features: int, *, threshold: float = SUPPORT_THRESHOLD,
                 hidden: int = 64, depth: int = 1, batch_norm: bool = False) -> None:
        super().__init__()
        if not 0.0 < threshold <= 0.5:
            raise ValueError(f"threshold must lie in (0, 0.5], got {threshold}")
        self.threshold = float(threshold)
        self.discriminator = DomainDiscriminator(features, hidden=hidden, depth=depth,
                                                 batch_norm=batch_norm)
        self.last_unsupported: float | None = None
        self.last_accuracy: float | None = None
        self._last_target_logits: Tensor | None = None

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = checks.feature_pair(f_s, f_t)
        logits = self.discriminator(torch.cat([f_s, f_t], dim=0).detach()).reshape(-1)
        loss, accuracy = domain_bce(logits, f_s.shape[0])
        target = logits[f_s.shape[0]:].detach()
        self._last_target_logits = target
        self.last_unsupported = float((torch.sigmoid(target) < self.threshold).float().mean())
        self.last_accuracy = float(accuracy)
        return loss

    def target_unsupported(self) -> Tensor:
        """The last call's target rows with q < τ (bool ``(B_t,)``), from the same forward
        pass as the loss (so batch norm saw the same mixed batch)."""
        if self._last_target_logits is None:
            raise RuntimeError("call the module on a batch before target_unsupported()")
        return torch.sigmoid(self._last_target_logits) < self.threshold

    @torch.no_grad()
    def support(self, f: Tensor) -> Tensor:
        """:math:`q(f)`, the estimated P(source | f), ``(B,)``; no gradient."""
        return torch.sigmoid(self.discriminator(f.detach()).reshape(-1))

    def unsupported(self, f: Tensor) -> Tensor:
        """Bool ``(B,)``: q(f) < τ."""
        return self.support(f) < self.threshold

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"
