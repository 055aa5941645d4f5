r"""CDAN / CDAN+E: conditional domain-adversarial training (Long, Cao, Wang & Jordan, 2018).

DANN aligns the feature distributions :math:`P(f)`; CDAN aligns the *joint* distributions of
features and class predictions :math:`P(f, p)` by conditioning the discriminator on the
classifier's prediction :math:`p = \mathrm{softmax}(g)` through the multilinear map
:math:`T(f, p) = p \otimes f` (or its randomized version for wide features):

.. math::
    \mathcal{L}_{\mathrm{CDAN}} = \tfrac12\Big[\tfrac{1}{n_s}\sum_i w_i\,
        \mathrm{BCE}\big(D(R(T(f^s_i, p^s_i))), 1\big)
      + \tfrac{1}{n_t}\sum_j w_j\,\mathrm{BCE}\big(D(R(T(f^t_j, p^t_j))), 0\big)\Big],

with :math:`R` the warm-started gradient reversal and :math:`D` a domain discriminator. CDAN+E
weighs each sample by its certainty :math:`w = 1 + e^{-H(p)}` (normalised per domain), so
hard-to-classify target samples steer the features less. The multilinear conditioning lets the
discriminator see multimodal (class-wise) structure that a plain feature discriminator misses.
Paper: Long, Cao, Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.checks import positive_int
from tlroutes.errors import DataError
from tlroutes.objectives.alignment import checks
from tlroutes.objectives.alignment.adversarial import (
    DomainDiscriminator,
    WarmStartGradientReverse,
    domain_bce,
)
from tlroutes.objectives.alignment.certainty import entropy_weights
from tlroutes.objectives.alignment.registry import register_alignment

__all__ = [
    "multilinear_map",
    "RandomizedMultilinearMap",
    "ConditionalDomainAdversarialLoss",
    "build_cdan",
]

#: Above this many multilinear-map entries (D·K) the registry entry uses the randomized map, as
#: the paper advises (a 4096-wide discriminator input is already large).
RANDOMIZE_ABOVE = 4096


def multilinear_map(f: Tensor, g: Tensor) -> Tensor:
    """CDAN's multilinear map: the flattened outer product ``g ⊗ f``, ``(B, K·D)``.

    Entry ``[b, k * D + d]`` is ``g[b, k] * f[b, d]``: the features copied once per class,
    each copy scaled by that class's probability.
    """
    return torch.einsum("bk,bd->bkd", g, f).reshape(f.shape[0], -1)


class RandomizedMultilinearMap(nn.Module):
    r"""CDAN's randomized multilinear map :math:`T_\odot(f, g) = (R_f f) \odot (R_g g)/\sqrt{d}`.

    :math:`R_f` ``(feature_dim, out_dim)`` and :math:`R_g` ``(num_classes, out_dim)`` are drawn
    once from :math:`\mathcal N(0, 1)` and fixed. They are non-trainable persistent buffers, so they
    follow ``.to(device)`` and are restored with the checkpoint. The inner product of two mapped
    vectors is an unbiased estimate of that of the full multilinear maps (Long et al., 2018),
    at width ``out_dim`` instead of ``feature_dim * num_classes``.

    Shape:
        ``f`` ``(B, feature_dim)``, ``g`` ``(B, num_classes)`` → ``(B, out_dim)``.
    """

    def __init__(self, feature_dim: int, num_classes: int, out_dim: int = 1024):
        super().__init__()
        self.out_dim = positive_int("randomized_dim", out_dim)
        feature_dim = positive_int("feature_dim", feature_dim)
        num_classes = positive_int("num_classes", num_classes)
        self.register_buffer("R_f", torch.randn(feature_dim, out_dim))
        self.register_buffer("R_g", torch.randn(num_classes, out_dim))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        return (f @ self.R_f.to(f.dtype)) * (g @ self.R_g.to(g.dtype)) / math.sqrt(self.out_dim)


class ConditionalDomainAdversarialLoss(nn.Module):
    r"""CDAN / CDAN+E: a domain discriminator conditioned on the classifier's predictions.

    With :math:`p = \mathrm{softmax}(g)` and the multilinear map :math:`T(f, p) = p \otimes f`
    (flattened to ``K·D``; or the randomized map of width ``randomized_dim`` when
    ``randomized=True``),

    .. math::
        \mathcal{L} = \tfrac12\Big[\tfrac{1}{n_s}\sum_i w_i\,\mathrm{BCE}(D(R(T(f^s_i,p^s_i))),1)
                   + \tfrac{1}{n_t}\sum_j w_j\,\mathrm{BCE}(D(R(T(f^t_j,p^t_j))),0)\Big]

    with :math:`R` a :class:`WarmStartGradientReverse` and :math:`D` a
    :class:`DomainDiscriminator`. Without entropy conditioning :math:`w \equiv 1` (CDAN). With it
    (CDAN+E), :math:`w = 1 + e^{-H(p)}` puts more weight on confidently classified samples, and the
    weights are normalised **per domain** to mean 1 (sum = that domain's batch size), as in the
    authors' code (thuml/CDAN: each domain's weights sum to one, total divided by two). TLlib
    instead normalises over the joint batch; the two agree when both domains have the same total
    weight.

    The predictions :math:`p` are **detached**, both inside :math:`T` and in :math:`w`, as in
    TLlib and the authors' code for the map: the adversarial signal reaches the features ``f``
    only, and the classifier is trained by its own loss. (The authors' code also reverses a
    gradient through :math:`w`; we treat the weights as constants, like TLlib.) Paper: Long, Cao,
    Wang & Jordan, "Conditional Adversarial Domain Adaptation", NeurIPS 2018.

    ``last_accuracy`` (float) holds the discriminator's domain accuracy of the last call. Put
    ``loss.parameters()`` in the optimiser too.

    Args:
        feature_dim: feature width D.
        num_classes: number of classes K.
        entropy_conditioning: CDAN+E weights. Default True.
        randomized: use the randomized multilinear map (advised when ``D·K`` > 4096, as in the
            paper). Default False.
        randomized_dim: width of the randomized map. Default 1024.
        max_steps, gamma: warm-up of the reversal coefficient. Defaults 1000 and 10.0.
        hidden, depth, batch_norm: the discriminator (CDAN uses 1024-wide hidden layers).
            Defaults 1024, 2, True.
        discriminator: a custom discriminator taking ``(B, K·D)`` (or ``(B, randomized_dim)``)
            and returning ``(B, 1)`` logits; overrides ``hidden``/``depth``/``batch_norm``.

    Shape:
        ``g_s`` ``(B_s, K)``, ``f_s`` ``(B_s, D)``, ``g_t`` ``(B_t, K)``, ``f_t`` ``(B_t, D)``
        → scalar.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        entropy_conditioning: bool = True,
        randomized: bool = False,
        randomized_dim: int = 1024,
        max_steps: int = 1000,
        gamma: float = 10.0,
        hidden: int = 1024,
        depth: int = 2,
        batch_norm: bool = True,
        discriminator: nn.Module | None = None,
    ):
        super().__init__()
        self.feature_dim = positive_int("feature_dim", feature_dim)
        self.num_classes = positive_int("num_classes", num_classes)
        self.entropy_conditioning = bool(entropy_conditioning)
        self.randomized = bool(randomized)
        if self.randomized:
            self.map = RandomizedMultilinearMap(feature_dim, num_classes, randomized_dim)
            map_dim = randomized_dim
        else:
            self.map = None
            map_dim = feature_dim * num_classes
        self.map_dim = map_dim
        self.discriminator = (
            discriminator
            if discriminator is not None
            else DomainDiscriminator(map_dim, hidden=hidden, depth=depth, batch_norm=batch_norm)
        )
        self.grl = WarmStartGradientReverse(max_steps=max_steps, gamma=gamma)
        self.last_accuracy: float | None = None

    def conditional_map(self, f: Tensor, probs: Tensor) -> Tensor:
        """``T(f, p)``: ``(B, K·D)``, or ``(B, randomized_dim)`` when randomized."""
        if self.map is not None:
            return self.map(f, probs)
        return multilinear_map(f, probs)

    def forward(self, g_s: Tensor, f_s: Tensor, g_t: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = checks.feature_pair(f_s, f_t)
        checks.logits("g_s", g_s, f_s.shape[0], self.num_classes)
        checks.logits("g_t", g_t, f_t.shape[0], self.num_classes)
        if f_s.shape[1] != self.feature_dim:
            raise DataError(
                f"Features have width {f_s.shape[1]} but the loss was built for "
                f"feature_dim={self.feature_dim}."
            )
        n_s = f_s.shape[0]
        f = torch.cat([f_s, f_t], dim=0)
        probs = F.softmax(torch.cat([g_s, g_t], dim=0), dim=1).detach()
        logits = self.discriminator(self.grl(self.conditional_map(f, probs)))
        weight = None
        if self.entropy_conditioning:
            w = entropy_weights(probs)
            weight = torch.cat([w[:n_s] / w[:n_s].mean(), w[n_s:] / w[n_s:].mean()])
        loss, accuracy = domain_bce(logits, n_s, weight)
        self.last_accuracy = float(accuracy)
        return loss


class _FamilyCDAN(ConditionalDomainAdversarialLoss):
    """CDAN taking the family call ``(f_s, f_t, g_s, g_t)``.

    A subclass rather than a wrapper, so the state-dict keys (``discriminator.*``,
    ``grl.num_steps``) and ``last_accuracy`` are those of the plain loss.
    """

    def forward(  # type: ignore[override]  # the family's argument order
        self, f_s: Tensor, f_t: Tensor, g_s: Tensor, g_t: Tensor
    ) -> Tensor:
        return super().forward(g_s, f_s, g_t, f_t)


@register_alignment("cdan", needs_classification=True)
def build_cdan(
    *,
    features: int,
    classes: int,
    max_steps: int,
    entropy_conditioning: bool = True,
    randomized: bool | None = None,
    randomized_dim: int = 1024,
    gamma: float = 10.0,
    hidden: int = 1024,
    depth: int = 2,
    batch_norm: bool = True,
    discriminator: nn.Module | None = None,
) -> ConditionalDomainAdversarialLoss:
    """Registry entry ``"cdan"``: CDAN+E by default, called as ``loss(f_s, f_t, g_s, g_t)``.

    Args:
        features, classes, max_steps: the family's context (the map is ``features × classes``
            wide; the reversal warms up over ``max_steps``).
        entropy_conditioning: CDAN+E's certainty weights. Default True.
        randomized: the randomized multilinear map; None (default) chooses it when
            ``features * classes`` > 4096, as the paper advises.
        randomized_dim: width of the randomized map. Default 1024.
        gamma: warm-up steepness γ. Default 10.0.
        hidden, depth, batch_norm: the discriminator. Defaults 1024, 2, True.
        discriminator: a module mapping the map's ``(B, features·classes)`` (or
            ``(B, randomized_dim)``) to ``(B, 1)`` logits, used instead of the built one.
            Default None.
    """
    if randomized is None:
        randomized = features * classes > RANDOMIZE_ABOVE
    return _FamilyCDAN(
        features, classes, entropy_conditioning=entropy_conditioning, randomized=randomized,
        randomized_dim=randomized_dim, max_steps=max_steps, gamma=gamma, hidden=hidden,
        depth=depth, batch_norm=batch_norm, discriminator=discriminator,
    )
