r"""MK-MMD, the alignment loss of DAN (Long, Cao, Wang & Jordan, ICML 2015).

The maximum mean discrepancy between the source and target feature distributions :math:`P, Q`
in the reproducing-kernel Hilbert space of a kernel :math:`k`,

.. math::
    \mathrm{MMD}^2_k(P, Q) = \big\lVert \mathbb E_P[\phi(x)] - \mathbb E_Q[\phi(y)] \big\rVert^2
    = \mathbb E\,k(x, x') + \mathbb E\,k(y, y') - 2\,\mathbb E\,k(x, y),

with the multi-kernel :math:`k = \sum_u \beta_u k_u` a sum of Gaussians of several bandwidths
(all :math:`\beta_u = 1` here, as in TLlib's DAN). It is zero exactly when :math:`P = Q` for a
characteristic kernel, and its batch estimate is differentiable in the features, so minimising it
pulls the two feature distributions together without a discriminator. Estimated by
:func:`~tlroutes.objectives.alignment.kernels.kernel_mmd` (unbiased, or linear-time). Paper:
Long, Cao, Wang & Jordan, "Learning Transferable Features with Deep Adaptation Networks",
ICML 2015; the estimators: Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tlroutes.errors import ConfigError
from tlroutes.objectives.alignment import checks
from tlroutes.objectives.alignment.kernels import default_kernels, kernel_mmd
from tlroutes.objectives.alignment.registry import register_alignment

__all__ = ["MultipleKernelMMD", "build_mmd"]


class MultipleKernelMMD(nn.Module):
    r"""Multi-kernel maximum mean discrepancy (MK-MMD), the alignment loss of DAN.

    With the kernel :math:`k = \sum_u k_u` (all weights :math:`\beta_u = 1`, as in TLlib's DAN)
    and source :math:`\{x_i\}_{i=1}^{n}`, target :math:`\{y_j\}_{j=1}^{m}`:

    * ``linear=False`` (default) — the **unbiased** quadratic-time estimator (a U-statistic,
      Gretton et al., JMLR 2012); it is ≈ 0 (and may dip slightly below 0) for samples
      from the same distribution:

      .. math::
          \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)}\sum_{i\ne i'} k(x_i,x_{i'})
          + \frac{1}{m(m-1)}\sum_{j\ne j'} k(y_j,y_{j'})
          - \frac{2}{nm}\sum_{i,j} k(x_i,y_j).

      Batch sizes may differ (each at least 2).
    * ``linear=True`` — the **linear-time** unbiased estimator of Long et al., ICML 2015 (after
      Gretton et al. 2012): the batches are cut into quad-tuples
      :math:`(x_{2i-1}, x_{2i}, y_{2i-1}, y_{2i})` and

      .. math::
          \widehat{\mathrm{MMD}}^2_l = \frac{2}{n}\sum_{i=1}^{n/2}
          \big[k(x_{2i-1},x_{2i}) + k(y_{2i-1},y_{2i})
               - k(x_{2i-1},y_{2i}) - k(x_{2i},y_{2i-1})\big].

      Source and target batch sizes must be equal; an odd last sample is dropped.

    Default kernel family (the common DAN choice, as in TLlib's DAN example): five Gaussian
    kernels with :math:`\sigma^2 = 2^k \cdot \overline{d^2}` for :math:`k = -3, \dots, 1`, where
    :math:`\overline{d^2}` is the mean squared distance over all pairs of distinct points in the
    concatenated source+target batch (``linear=True``: over the pairs the estimator uses, so the
    cost stays linear). Paper: Long, Cao, Wang & Jordan, "Learning Transferable Features with Deep
    Adaptation Networks", ICML 2015.

    Args:
        kernels: kernel modules called as ``kernel(sq_dist, mean_sq_dist)`` (e.g.
            :class:`GaussianKernel`); None for the default family. Default None.
        linear: use the linear-time estimator. Default False.

    Shape:
        ``f_s`` ``(n, D)``, ``f_t`` ``(m, D)`` (extra dims are flattened) → scalar. ``g_s``,
        ``g_t`` (head outputs) are accepted for the family call and ignored.
    """

    def __init__(self, kernels: Sequence[nn.Module] | None = None, linear: bool = False):
        super().__init__()
        kernels = default_kernels() if kernels is None else list(kernels)
        if not kernels:
            raise ConfigError("MultipleKernelMMD needs at least one kernel, got an empty list.")
        self.kernels = nn.ModuleList(kernels)
        self.linear = bool(linear)

    def forward(
        self, f_s: Tensor, f_t: Tensor, g_s: Tensor | None = None, g_t: Tensor | None = None
    ) -> Tensor:
        f_s, f_t = checks.feature_pair(f_s, f_t, min_rows=2)
        return kernel_mmd(
            [(f_s, f_t)], [self.kernels], linear=self.linear, who="MultipleKernelMMD"
        )


@register_alignment("mmd")
def build_mmd(
    *, features: int, classes: int, max_steps: int, linear: bool = False
) -> MultipleKernelMMD:
    """Registry entry ``"mmd"``: MK-MMD over the default five Gaussian kernels; ``linear`` as in
    :class:`MultipleKernelMMD` (the family's context is not read)."""
    return MultipleKernelMMD(linear=linear)
