r"""DANN: domain-adversarial training (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016).

A domain discriminator :math:`D` learns to tell source features (label 1) from target features
(label 0) while a gradient reversal layer :math:`R` hands the feature extractor the *negated*
gradient, so minimising one loss plays the min-max game in a single backward pass:

.. math::
    \mathcal{L}_{\mathrm{DANN}} = \tfrac12\Big[\tfrac{1}{n_s}\sum_{i=1}^{n_s}
        \mathrm{BCE}\big(D(R(f^s_i)), 1\big)
      + \tfrac{1}{n_t}\sum_{j=1}^{n_t} \mathrm{BCE}\big(D(R(f^t_j)), 0\big)\Big],

with the reversal coefficient warming up as :math:`\lambda(p) = 2/(1+e^{-\gamma p}) - 1`,
:math:`p` the share of training done. At the game's equilibrium the features no longer show
their domain, which bounds the target error by the source error plus a domain divergence
(Ben-David et al., 2010). Papers: Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", ICML 2015; Ganin et al., "Domain-Adversarial Training of Neural Networks",
JMLR 2016.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tlroutes.errors import ConfigError
from tlroutes.objectives.alignment import checks
from tlroutes.objectives.alignment.adversarial import (
    DomainDiscriminator,
    WarmStartGradientReverse,
    domain_bce,
)
from tlroutes.objectives.alignment.registry import register_alignment

__all__ = ["DomainAdversarialLoss", "build_dann"]


class DomainAdversarialLoss(nn.Module):
    r"""DANN's domain-adversarial loss: a discriminator behind a gradient reversal layer.

    .. math::
        \mathcal{L} = \tfrac12\Big[\tfrac{1}{n_s}\sum_i \mathrm{BCE}(D(R(f^s_i)), 1)
                    + \tfrac{1}{n_t}\sum_j \mathrm{BCE}(D(R(f^t_j)), 0)\Big]

    with :math:`D` the :class:`DomainDiscriminator` (source = 1, target = 0) and :math:`R` a
    :class:`WarmStartGradientReverse`. Minimising :math:`\mathcal{L}` over all parameters trains
    :math:`D` to tell the domains apart while the reversed gradient trains the feature extractor to
    make them indistinguishable. The two domains are averaged separately, so unequal batch sizes
    weigh the same. Paper: Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016.

    After each call, ``last_accuracy`` (float) holds the discriminator's domain accuracy on that
    batch (mean of the per-domain accuracies); near 0.5 means the features no longer show their
    domain. Put ``loss.parameters()`` in the optimiser too: the discriminator lives here.

    Args:
        in_dim: feature width D, to build ``DomainDiscriminator(D, hidden, depth, batch_norm)``;
            or an ``nn.Module`` mapping ``(B, D)`` to ``(B, 1)`` logits, used as the
            discriminator.
        discriminator: the discriminator module, by keyword (instead of ``in_dim``).
        max_steps: steps over which the reversal coefficient warms up. Default 1000.
        gamma: warm-up steepness γ. Default 10.0.
        lo, hi: reversal coefficient range. Defaults 0.0 and 1.0.
        hidden, depth, batch_norm: for the built discriminator. Defaults 256, 2, True.

    Shape:
        ``f_s`` ``(B_s, D)``, ``f_t`` ``(B_t, D)`` (extra dims are flattened) → scalar.
        ``g_s``, ``g_t`` (head outputs) are accepted for the family call and ignored.
    """

    def __init__(
        self,
        in_dim: int | nn.Module | None = None,
        *,
        discriminator: nn.Module | None = None,
        max_steps: int = 1000,
        gamma: float = 10.0,
        lo: float = 0.0,
        hi: float = 1.0,
        hidden: int = 256,
        depth: int = 2,
        batch_norm: bool = True,
    ):
        super().__init__()
        if isinstance(in_dim, nn.Module):
            in_dim, discriminator = None, in_dim
        if (in_dim is None) == (discriminator is None):
            raise ConfigError(
                "DomainAdversarialLoss needs exactly one of in_dim (the feature width, to build a "
                "DomainDiscriminator) or discriminator (an nn.Module returning (B, 1) logits)."
            )
        self.discriminator = (
            discriminator
            if discriminator is not None
            else DomainDiscriminator(in_dim, hidden=hidden, depth=depth, batch_norm=batch_norm)
        )
        self.grl = WarmStartGradientReverse(max_steps=max_steps, gamma=gamma, lo=lo, hi=hi)
        self.last_accuracy: float | None = None

    def forward(
        self, f_s: Tensor, f_t: Tensor, g_s: Tensor | None = None, g_t: Tensor | None = None,
        *, target_weight: Tensor | None = None,
    ) -> Tensor:
        """The loss; ``target_weight`` ``(B_t,)`` weighs each target row's cross-entropy (e.g.
        0 to leave a sample out of the alignment; source rows weigh 1). Default None: all 1."""
        f_s, f_t = checks.feature_pair(f_s, f_t)
        logits = self.discriminator(self.grl(torch.cat([f_s, f_t], dim=0)))
        weight = None
        if target_weight is not None:
            weight = torch.cat([torch.ones(f_s.shape[0], device=f_s.device),
                                target_weight.reshape(-1).to(f_s.device)]).to(logits.dtype)
        loss, accuracy = domain_bce(logits, f_s.shape[0], weight)
        self.last_accuracy = float(accuracy)
        return loss


@register_alignment("dann")
def build_dann(
    *,
    features: int,
    classes: int,
    max_steps: int,
    gamma: float = 10.0,
    hidden: int = 256,
    depth: int = 2,
    batch_norm: bool = True,
    discriminator: nn.Module | None = None,
) -> DomainAdversarialLoss:
    """Registry entry ``"dann"``: a :class:`DomainAdversarialLoss` over ``features``-wide features.

    Args:
        features, classes, max_steps: the family's context (``classes`` is not read; the
            reversal warms up over ``max_steps``).
        gamma: warm-up steepness γ. Default 10.0.
        hidden: width of the discriminator's hidden layers. Default 256.
        depth: number of hidden blocks (0: logistic regression). Default 2.
        batch_norm: batch norm in the discriminator's hidden blocks. Default True.
        discriminator: a module mapping ``(B, features)`` to ``(B, 1)`` logits, used instead of
            the built one (then ``hidden``, ``depth``, ``batch_norm`` are not read). Default None.
    """
    if discriminator is not None:
        return DomainAdversarialLoss(discriminator=discriminator, max_steps=max_steps, gamma=gamma)
    return DomainAdversarialLoss(
        features, max_steps=max_steps, gamma=gamma, hidden=hidden, depth=depth,
        batch_norm=batch_norm,
    )
