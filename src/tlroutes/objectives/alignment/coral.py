r"""Deep CORAL: align the second-order statistics of the two domains (Sun & Saenko, 2016).

.. math::
    \ell_{\mathrm{CORAL}} = \frac{1}{4d^2}\,\lVert C_S - C_T \rVert_F^2, \qquad
    C = \frac{1}{n-1}\Big(X^\top X - \frac1n (\mathbf 1^\top X)^\top(\mathbf 1^\top X)\Big),

with :math:`X` one domain's ``(n, d)`` feature batch, so :math:`C_S`, :math:`C_T` are the
unbiased feature covariances of source and target. A differentiable, discriminator-free loss:
it is zero whenever both batches have the same covariance, whatever their means. Paper: Sun &
Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016 Workshops.
"""

from __future__ import annotations

from torch import Tensor, nn

from tlroutes.objectives.alignment import checks
from tlroutes.objectives.alignment.registry import register_alignment

__all__ = ["CorrelationAlignmentLoss", "build_coral"]


class CorrelationAlignmentLoss(nn.Module):
    r"""Deep CORAL: match the second-order statistics (covariances) of the two domains.

    .. math::
        \ell_{\mathrm{CORAL}} = \frac{1}{4d^2}\,\lVert C_S - C_T \rVert_F^2, \qquad
        C = \frac{1}{n-1}\Big(X^\top X - \frac1n (\mathbf 1^\top X)^\top(\mathbf 1^\top X)\Big),

    where :math:`X` is one domain's ``(n, d)`` feature batch, so :math:`C` is its unbiased
    covariance (``np.cov(X, rowvar=False)``). Exactly the loss of Sun & Saenko, "Deep CORAL:
    Correlation Alignment for Deep Domain Adaptation", ECCV 2016 Workshops; unlike some
    implementations it has no extra mean-difference term. It is zero when both batches have the
    same covariance, e.g. identical batches.

    Shape:
        ``f_s`` ``(n_s, d)``, ``f_t`` ``(n_t, d)`` with ``n_s, n_t >= 2`` (extra dims are
        flattened; batch sizes may differ) → scalar. ``g_s``, ``g_t`` (head outputs) are
        accepted for the family call and ignored.
    """

    def forward(
        self, f_s: Tensor, f_t: Tensor, g_s: Tensor | None = None, g_t: Tensor | None = None
    ) -> Tensor:
        f_s, f_t = checks.feature_pair(f_s, f_t, min_rows=2)
        d = f_s.shape[1]
        diff = _covariance(f_s) - _covariance(f_t)
        return (diff * diff).sum() / (4.0 * d * d)


def _covariance(x: Tensor) -> Tensor:
    """The unbiased covariance ``(D, D)`` of the rows of ``x`` ``(n, D)``."""
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - 1)


@register_alignment("coral")
def build_coral(*, features: int, classes: int, max_steps: int) -> CorrelationAlignmentLoss:
    """Registry entry ``"coral"``: Deep CORAL has no settings and reads none of the context."""
    return CorrelationAlignmentLoss()
