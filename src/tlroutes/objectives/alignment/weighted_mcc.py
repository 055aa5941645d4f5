r"""Class-weighted MCC: minimum class confusion for *partial* domain adaptation.

MCC (:mod:`.mcc`, Jin et al., ECCV 2020) averages every class's between-class confusion,

.. math::
    \mathcal{L}_{\mathrm{MCC}} = \frac{1}{K}\sum_{j=1}^{K} r_j, \qquad
    r_j = \sum_{k \ne j}\tilde C_{jk} = 1 - \tilde C_{jj},

where :math:`\tilde C` is the row-normalised, certainty-weighted confusion matrix of a target
batch. When the target holds only some of the source's classes, the rows of the classes it lacks
are built from the tiny probabilities the model still gives them; category normalisation blows
each such row up to sum 1, so :math:`r_j` of an absent class is as large as a present one's and
its gradient pushes the samples that give class :math:`j` a little mass to give it *more* — the
negative transfer partial adaptation must avoid. Class-weighted MCC weighs each row by the
class weights :math:`\gamma` of PADA (:func:`tlroutes.objectives.alignment.pada.pada_class_weights`:
the target's mean softmax over its training set, divided by its largest entry):

.. math::
    \mathcal{L} = \frac{\sum_j \gamma_j\, r_j}{\sum_j \gamma_j}.

With :math:`\gamma = 1` (the buffer's start) this *is* MCC. Confusion *into* an absent class
(:math:`\tilde C_{jk}`, :math:`j` present, :math:`k` absent) stays penalised in the present
class's row, so predictions are still pushed off the absent classes. The partial variant of
Domain Adaptation (:mod:`tlroutes.routes.da_variants.partial`) pairs it with PADA's
:math:`\gamma`-weighted source cross-entropy and refreshes :math:`\gamma` once an epoch.
The weighting is PADA's (Cao, Ma, Long & Wang, ECCV 2018) applied to MCC's per-class rows; the
MCC paper itself evaluates plain MCC on partial benchmarks (Office-Home, 25 target classes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tlroutes.objectives.alignment.mcc import MinimumClassConfusionLoss
from tlroutes.objectives.alignment.registry import register_alignment

__all__ = ["ClassWeightedMCC", "build_weighted_mcc"]


class ClassWeightedMCC(MinimumClassConfusionLoss):
    r"""MCC whose per-class confusion rows are averaged with weights :math:`\gamma` ``(K,)``.

    ``class_weight`` is a persistent buffer (saved and resumed with the module), all ones at
    first (plain MCC); :meth:`set_class_weight` replaces it. Called with the alignment family's
    ``(f_s, f_t, g_s, g_t)``; reads ``g_t`` only.

    Args:
        classes: K, the head's output width.
        temperature: softmax temperature T (> 0). Default 2.5 (MCC's).

    Shape:
        ``g_t`` ``(B, K)`` → scalar.
    """

    class_weight: Tensor

    def __init__(self, classes: int, temperature: float = 2.5) -> None:
        super().__init__(temperature=temperature)
        if classes < 1:
            raise ValueError(f"classes must be at least 1, got {classes}")
        self.register_buffer("class_weight", torch.ones(classes), persistent=True)

    def set_class_weight(self, weight: Tensor) -> None:
        r"""Replace :math:`\gamma` (``(K,)``, non-negative, not all zero)."""
        if weight.shape != self.class_weight.shape:
            raise ValueError(f"class weights must have shape {tuple(self.class_weight.shape)}, "
                             f"got {tuple(weight.shape)}")
        if bool((weight < 0).any()) or not bool(weight.sum() > 0):
            raise ValueError("class weights must be non-negative and not all zero")
        with torch.no_grad():
            self.class_weight.copy_(weight.to(self.class_weight))

    def forward(  # type: ignore[override]  # the family's argument order
        self, f_s: Tensor, f_t: Tensor, g_s: Tensor, g_t: Tensor
    ) -> Tensor:
        if g_t.dim() != 2 or g_t.shape[1] != self.class_weight.numel():
            raise ValueError(f"target logits must be (B, {self.class_weight.numel()}), got "
                             f"{tuple(g_t.shape)}")
        rows = self.row_confusion(g_t)
        gamma = self.class_weight.to(rows.dtype)
        return (gamma * rows).sum() / gamma.sum()


@register_alignment("weighted_mcc", needs_classification=True)
def build_weighted_mcc(
    *, features: int, classes: int, max_steps: int, temperature: float = 2.5
) -> ClassWeightedMCC:
    """Registry entry ``"weighted_mcc"``, called as ``loss(f_s, f_t, g_s, g_t)`` (reads ``g_t``).

    Its class weights start at 1 (plain MCC); the partial variant of Domain Adaptation sets
    them from the target's predictions each epoch.

    Args:
        features, max_steps: the family's context (not read).
        classes: K, the length of the class weights.
        temperature: softmax temperature T (> 0). Default 2.5 (MCC's).
    """
    return ClassWeightedMCC(classes, temperature=temperature)
