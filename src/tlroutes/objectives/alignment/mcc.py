r"""MCC: minimum class confusion on the target (Jin, Wang, Long & Wang, ECCV 2020).

A target batch whose predictions spread each sample over several classes is *confused*; MCC
measures the between-class confusion of the target predictions and minimises it, with no
discriminator and no source term:

.. math::
    \hat Y = \mathrm{softmax}(g^t / T), \quad
    C = \hat Y^\top W \hat Y, \quad
    \tilde C_{jk} = \frac{C_{jk}}{\sum_{k'} C_{jk'}}, \quad
    \mathcal{L}_{\mathrm{MCC}} = \frac{1}{K}\sum_{j \ne k} \tilde C_{jk},

with temperature :math:`T` and :math:`W` the diagonal of certainty weights
:math:`w_i = 1 + e^{-H(\hat y_i)}` normalised to sum to the batch size. It is zero when every
target sample is confidently assigned and every class appears, and (K−1)/K for uniform
predictions. Paper: Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain
Adaptation", ECCV 2020.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.checks import positive
from tlroutes.errors import DataError
from tlroutes.objectives.alignment.certainty import entropy_weights
from tlroutes.objectives.alignment.registry import register_alignment

__all__ = ["MinimumClassConfusionLoss", "build_mcc"]


class MinimumClassConfusionLoss(nn.Module):
    r"""Minimum Class Confusion: penalise target predictions that mix classes.

    With target logits :math:`g` ``(B, K)`` and temperature :math:`T`:

    1. :math:`\hat Y = \mathrm{softmax}(g / T)` (temperature rescaling);
    2. certainty weights :math:`w_i = 1 + \exp(-H(\hat y_i))`, normalised to sum to ``B``
       (:math:`W = \mathrm{diag}(B\,w / \sum_i w_i)`), treated as constants (detached, as in the
       authors' TLlib code);
    3. class confusion :math:`C = \hat Y^\top W \hat Y` ``(K, K)``;
    4. category normalisation: each row divided by its sum,
       :math:`\tilde C_{jk} = C_{jk} / \sum_{k'} C_{jk'}`;
    5. :math:`\mathcal{L} = \frac{1}{K}\big(\sum_{j,k}\tilde C_{jk} - \mathrm{tr}\,\tilde C\big)`,
       the mean off-diagonal (between-class) confusion per class.

    Confident predictions covering every class once give 0. A class whose column is exactly zero
    has a zero row, which is left at zero (not divided by zero); but a class that is merely absent
    from the batch still has tiny probabilities, so its normalised row spreads over the predicted
    classes and adds ≈ 1/K: a batch smaller than K cannot reach 0. Paper: Jin, Wang, Long & Wang,
    "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.

    Args:
        temperature: softmax temperature T (> 0). Default 2.5 (the paper's choice).

    Shape:
        ``logits_t`` ``(B, K)`` → scalar.
    """

    def __init__(self, temperature: float = 2.5):
        super().__init__()
        self.temperature = positive("temperature", temperature)

    def forward(self, logits_t: Tensor) -> Tensor:
        if not isinstance(logits_t, Tensor) or logits_t.dim() != 2:
            raise DataError(
                "MinimumClassConfusionLoss expects target logits of shape (B, K), got "
                f"{tuple(getattr(logits_t, 'shape', ()))}."
            )
        return self.row_confusion(logits_t).mean()

    def row_confusion(self, logits_t: Tensor) -> Tensor:
        r"""Steps 1-4, then each class's between-class confusion
        :math:`\sum_{k \ne j}\tilde C_{jk}` → ``(K,)``; MCC is their mean.

        Class-weighted MCC (:mod:`.weighted_mcc`) takes a weighted mean of the same rows.
        """
        batch = logits_t.shape[0]
        probs = F.softmax(logits_t / self.temperature, dim=1)
        w = entropy_weights(probs.detach())
        w = batch * w / w.sum()
        confusion = (probs * w[:, None]).T @ probs
        row_sum = confusion.sum(dim=1, keepdim=True).clamp_min(torch.finfo(confusion.dtype).tiny)
        confusion = confusion / row_sum
        return confusion.sum(dim=1) - confusion.diagonal()


class _FamilyMCC(MinimumClassConfusionLoss):
    """MCC taking the family call ``(f_s, f_t, g_s, g_t)``: it reads the target logits only."""

    def forward(  # type: ignore[override]  # the family's argument order
        self, f_s: Tensor, f_t: Tensor, g_s: Tensor, g_t: Tensor
    ) -> Tensor:
        return super().forward(g_t)


@register_alignment("mcc", needs_classification=True)
def build_mcc(
    *, features: int, classes: int, max_steps: int, temperature: float = 2.5
) -> MinimumClassConfusionLoss:
    """Registry entry ``"mcc"``, called as ``loss(f_s, f_t, g_s, g_t)`` (reads ``g_t`` only).

    Args:
        features, classes, max_steps: the family's context (none is read).
        temperature: softmax temperature T (> 0). Default 2.5 (the paper's choice).
    """
    return _FamilyMCC(temperature=temperature)
