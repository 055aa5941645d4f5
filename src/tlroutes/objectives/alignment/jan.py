r"""JAN: the joint maximum mean discrepancy (Long, Zhu, Wang & Jordan, ICML 2017).

DAN's MMD aligns the marginal distribution of the features; JAN aligns the *joint* distribution
of several layers' activations — here the trunk's features :math:`f` and the head's class
probabilities :math:`p = \mathrm{softmax}(g)` — by embedding the joint distribution in the tensor
product of the layers' reproducing-kernel Hilbert spaces. The joint MMD (JMMD) then uses the
product of the layers' kernels:

.. math::
    \widehat D_{\mathcal L}(P, Q) =
      \frac{1}{n_s^2}\sum_{i,j} \prod_{\ell} k^\ell(z^{s\ell}_i, z^{s\ell}_j)
    + \frac{1}{n_t^2}\sum_{i,j} \prod_{\ell} k^\ell(z^{t\ell}_i, z^{t\ell}_j)
    - \frac{2}{n_s n_t}\sum_{i,j} \prod_{\ell} k^\ell(z^{s\ell}_i, z^{t\ell}_j),
    \qquad \mathcal L = \{f, p\}.

Two samples whose features look alike but whose predictions differ (or the reverse) are far
apart under the product kernel, so JMMD is small only when features *and* predictions match
across domains. The paper writes this quadratic estimate and trains with the linear-time one
(``linear=True``); by default this module uses the unbiased quadratic estimate (the sums above
without their :math:`i = j` terms, normalised by :math:`n(n-1)`), as :class:`MultipleKernelMMD`
does — see :func:`~tlroutes.objectives.alignment.kernels.kernel_mmd`. The gradient reaches the
features and, through the softmax, the classifier, as in the paper. Kernels, as in TLlib's JAN
example: on the features DAN's five Gaussians with :math:`\sigma^2 = 2^k\,\overline{d^2}`,
:math:`k = -3..1`; on the probabilities one Gaussian with :math:`\sigma = 0.92`. The adversarial
variant JAN-A (kernel parameters trained to maximise JMMD) is not included. Paper: Long, Zhu,
Wang & Jordan, "Deep Transfer Learning with Joint Adaptation Networks", ICML 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.errors import ConfigError
from tlroutes.objectives.alignment import checks
from tlroutes.objectives.alignment.kernels import GaussianKernel, default_kernels, kernel_mmd
from tlroutes.objectives.alignment.registry import register_alignment

__all__ = ["PREDICTION_SIGMA", "JointMultipleKernelMMD", "build_jan"]

#: Bandwidth σ of the Gaussian on softmax outputs (TLlib's JAN example). Two one-hot predictions
#: of different classes lie √2 apart, so they still share exp(−1/σ²) ≈ 0.31 of their kernel.
PREDICTION_SIGMA = 0.92


class JointMultipleKernelMMD(nn.Module):
    r"""Joint multi-kernel MMD of (features, class probabilities) — JAN's alignment loss.

    The joint kernel is
    :math:`k(z, z') = \big(\sum_u k^f_u(f, f')\big)\big(\sum_v k^p_v(p, p')\big)` with
    :math:`p = \mathrm{softmax}(g)`; the estimate is that of :class:`MultipleKernelMMD` under
    this kernel (see the module docstring).

    Args:
        feature_kernels: kernels summed on the features, each called as
            ``kernel(sq_dist, mean_sq_dist)``; None for DAN's five Gaussians. Default None.
        prediction_kernels: kernels summed on the softmax outputs; None for one Gaussian with
            ``sigma=0.92``. Default None.
        linear: the linear-time estimator (equal source and target batch sizes; an odd last
            sample is dropped). Default False (unbiased quadratic-time).

    Shape:
        ``f_s`` ``(n, D)``, ``f_t`` ``(m, D)`` (extra dims are flattened), ``g_s`` ``(n, K)``,
        ``g_t`` ``(m, K)`` logits → scalar.
    """

    def __init__(
        self,
        feature_kernels: Sequence[nn.Module] | None = None,
        prediction_kernels: Sequence[nn.Module] | None = None,
        linear: bool = False,
    ):
        super().__init__()
        feature_kernels = default_kernels() if feature_kernels is None else list(feature_kernels)
        if prediction_kernels is None:
            prediction_kernels = [GaussianKernel(sigma=PREDICTION_SIGMA)]
        prediction_kernels = list(prediction_kernels)
        if not feature_kernels or not prediction_kernels:
            raise ConfigError(
                "JointMultipleKernelMMD needs at least one kernel per layer, got an empty list."
            )
        self.feature_kernels = nn.ModuleList(feature_kernels)
        self.prediction_kernels = nn.ModuleList(prediction_kernels)
        self.linear = bool(linear)

    def forward(self, f_s: Tensor, f_t: Tensor, g_s: Tensor, g_t: Tensor) -> Tensor:
        f_s, f_t = checks.feature_pair(f_s, f_t, min_rows=2)
        checks.logits("g_s", g_s, f_s.shape[0])
        checks.logits("g_t", g_t, f_t.shape[0], g_s.shape[1])
        p_s, p_t = F.softmax(g_s, dim=1), F.softmax(g_t, dim=1)
        return kernel_mmd(
            [(f_s, f_t), (p_s, p_t)],
            [self.feature_kernels, self.prediction_kernels],
            linear=self.linear,
            who="JointMultipleKernelMMD",
        )


@register_alignment("jan", needs_classification=True)
def build_jan(
    *, features: int, classes: int, max_steps: int, linear: bool = False
) -> JointMultipleKernelMMD:
    """Registry entry ``"jan"``: JMMD over the features and the head's softmax outputs;
    ``linear`` as in :class:`JointMultipleKernelMMD` (the family's context is not read)."""
    return JointMultipleKernelMMD(linear=linear)
