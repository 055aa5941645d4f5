r"""OSBP: Open Set Domain Adaptation by Backpropagation (Saito et al., ECCV 2018).

In *open-set* domain adaptation the target holds classes the source lacks. OSBP gives the
classifier :math:`C` a (K+1)-th output, "unknown", trains it on the source's K classes with the
usual cross-entropy, and plays an adversarial game on the target's unknown probability
:math:`p_{K+1}(x) = \operatorname{softmax}(C(G(x)))_{K+1}` against a boundary :math:`t`:

.. math::
    \mathcal{L}_s = \frac{1}{n_s}\sum_i \mathrm{CE}\big(C(G(x^s_i)), y_i\big), \qquad
    \mathcal{L}_{adv} = \frac{1}{n_t}\sum_j -t\log p_{K+1}(x^t_j)
                                            - (1-t)\log\big(1 - p_{K+1}(x^t_j)\big),

    \min_C\; \mathcal{L}_s + \mathcal{L}_{adv}, \qquad \min_G\; \mathcal{L}_s - \mathcal{L}_{adv}.

The classifier, minimising the BCE, sets every target sample's :math:`p_{K+1}` to :math:`t`; the
generator (feature extractor), maximising it, moves each target sample away from the boundary:
towards a known class (:math:`p_{K+1} < t`) when it resembles one, towards unknown otherwise.
One backward pass plays both sides through a gradient reversal layer between :math:`G` and
:math:`C` on the target path (coefficient 1, as in the paper). With :math:`t = 0.5` (the paper's
choice) a target sample is unknown when :math:`p_{K+1}` is the largest output (the authors' test
rule; :math:`p_{K+1} > t` implies it).

Scores (the paper's): **OS** the mean of the per-class accuracies over the known classes present
and the unknown class; **OS\*** the same mean over the known classes only; besides them this
module reports the unknown class's recall apart. Paper: K. Saito, S. Yamamoto, Y. Ushiku,
T. Harada, "Open Set Domain Adaptation by Backpropagation", ECCV 2018.

The adversarial term reads the head (it must run the classifier on reversed features), which the
alignment family's call does not give, so this is a plain module used by the open-set variant of
Domain Adaptation (:mod:`tlroutes.routes.da_variants.open_set`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.objectives.alignment.adversarial import WarmStartGradientReverse, grad_reverse

__all__ = ["OpenSetBackpropLoss", "open_set_scores"]


class OpenSetBackpropLoss(nn.Module):
    r"""OSBP's adversarial term :math:`\mathcal{L}_{adv}` on target features, through a reversal.

    ``loss(f_t, head)`` runs ``head`` (the (K+1)-way classifier, logits with "unknown" last) on
    ``R(f_t)`` — identity forward, gradient times ``-coeff`` backward — and returns the binary
    cross-entropy of :math:`p_{K+1}` to ``threshold``. Minimising it trains the head towards
    :math:`p_{K+1} = t` and, reversed, the feature extractor away from it.

    Args:
        threshold: the boundary t in (0, 1). Default 0.5 (the paper's).
        coeff: gradient reversal coefficient (the generator's weight on the maximised term).
            Default 1.0 (the paper's).
        max_steps: when given, the coefficient warms up from 0 to ``coeff`` over this many
            training steps with DANN's schedule (a :class:`WarmStartGradientReverse`, resumed
            with the module). Default None: ``coeff`` from the first step, as in the paper.
        eps: clamp of the probabilities before the logarithms. Default 1e-6.

    After each call, ``last_unknown`` (float) holds the batch's mean :math:`p_{K+1}`.
    """

    def __init__(self, threshold: float = 0.5, coeff: float = 1.0, max_steps: int | None = None,
                 eps: float = 1e-6) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        if coeff < 0:
            raise ValueError(f"coeff must be >= 0, got {coeff}")
        self.threshold, self.coeff, self.eps = float(threshold), float(coeff), float(eps)
        self.grl = (None if max_steps is None
                    else WarmStartGradientReverse(max_steps=max_steps, hi=self.coeff))
        self.last_unknown: float | None = None

    def forward(self, f_t: Tensor, head: Callable[[Tensor], Tensor]) -> Tensor:
        reversed_f = grad_reverse(f_t, self.coeff) if self.grl is None else self.grl(f_t)
        logits = head(reversed_f)
        p = F.softmax(logits.float(), dim=1)[:, -1].clamp(self.eps, 1 - self.eps)
        t = self.threshold
        self.last_unknown = float(p.detach().mean())
        return -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()


def open_set_scores(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """OS, OS*, unknown recall and accuracy of (K+1)-way ``logits`` ("unknown" last).

    Args:
        logits: ``(N, K+1)``; a sample is predicted unknown when its last output is the
            largest.
        labels: ``(N,)`` long in ``[0, K]``, ``K`` meaning a class the source lacks.

    Returns:
        ``os`` (mean per-class accuracy over the known classes present and unknown, when
        present), ``os_star`` (over the known classes present; 0 without any),
        ``unknown_recall`` (share of unknown samples predicted unknown; left out without any),
        ``unknown_precision`` (share of unknown predictions that are unknown; left out without
        any), ``predicted_unknown`` (share of samples predicted unknown) and ``accuracy`` (over
        all samples). Per-class accuracies are recalls, so a class's size does not weigh in OS.

    Raises:
        ValueError: no sample.
    """
    if labels.numel() == 0:
        raise ValueError("open_set_scores needs at least one sample")
    unknown = logits.shape[1] - 1
    pred = logits.argmax(dim=1).cpu()
    labels = labels.long().cpu()
    recalls = {int(c): float((pred[labels == c] == c).float().mean())
               for c in torch.unique(labels).tolist()}
    known = [v for c, v in recalls.items() if c != unknown]
    said_unknown = pred == unknown
    out = {
        "os": sum(recalls.values()) / len(recalls),
        "os_star": sum(known) / len(known) if known else 0.0,
        "predicted_unknown": float(said_unknown.float().mean()),
        "accuracy": float((pred == labels).float().mean()),
    }
    # Left out rather than NaN when undefined: metrics files and summaries stay plain numbers.
    if unknown in recalls:
        out["unknown_recall"] = recalls[unknown]
    if bool(said_unknown.any()):
        out["unknown_precision"] = float((labels[said_unknown] == unknown).float().mean())
    return out
