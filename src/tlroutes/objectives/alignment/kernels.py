r"""Gaussian kernels and the kernel two-sample estimator shared by MK-MMD (DAN) and JMMD (JAN).

- :class:`GaussianKernel` — :math:`k = \exp(-d^2/2\sigma^2)` on squared distances, with a fixed
  or a per-batch bandwidth;
- :func:`default_kernels` — DAN's family of five Gaussians around the batch's mean distance;
- :func:`kernel_mmd` — the squared MMD between two samples under the joint kernel
  :math:`k(z, z') = \prod_\ell \sum_u k_{\ell u}(z^\ell, z'^\ell)` over one or more "layers"
  of each sample (one layer: MK-MMD; features and predictions: JMMD), by the unbiased
  quadratic-time U-statistic or the linear-time estimate (Gretton et al., JMLR 2012).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tlroutes.checks import positive
from tlroutes.errors import ConfigError

__all__ = ["GaussianKernel", "default_kernels", "kernel_mmd"]


class GaussianKernel(nn.Module):
    r"""Gaussian (RBF) kernel on squared distances, :math:`k = \exp(-d^2 / 2\sigma^2)`.

    With a fixed ``sigma`` the bandwidth is :math:`\sigma^2` = ``sigma**2``. With ``sigma=None``
    (default) it adapts to each batch: :math:`\sigma^2 = \alpha \cdot \overline{d^2}`, the mean
    pairwise squared distance of the batch (given by the caller, e.g. :class:`MultipleKernelMMD`,
    or else the mean of the distances passed in), detached so no gradient flows through the
    bandwidth — the usual DAN/TLlib practice.

    Args:
        sigma: fixed bandwidth σ (> 0), or None to adapt it per batch. Default None.
        alpha: multiplier α of the mean squared distance when ``sigma`` is None. Default 1.0.

    Shape:
        ``sq_dist`` ``(*)`` of squared distances → kernel values ``(*)``.
    """

    def __init__(self, sigma: float | None = None, alpha: float = 1.0):
        super().__init__()
        self.sigma = None if sigma is None else positive("sigma", sigma)
        self.alpha = positive("alpha", alpha)

    def forward(self, sq_dist: Tensor, mean_sq_dist: Tensor | None = None) -> Tensor:
        if self.sigma is not None:
            sigma2 = torch.as_tensor(self.sigma**2, dtype=sq_dist.dtype, device=sq_dist.device)
        else:
            ref = sq_dist.mean() if mean_sq_dist is None else mean_sq_dist
            # Floor avoids 0/0 when every point coincides (all distances then are 0 and k = 1).
            sigma2 = (self.alpha * ref.detach()).clamp_min(torch.finfo(sq_dist.dtype).tiny)
        return torch.exp(-sq_dist / (2.0 * sigma2))

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}" if self.sigma is not None else f"alpha={self.alpha}"


def default_kernels() -> list[GaussianKernel]:
    r"""Five Gaussians with :math:`\sigma^2 = 2^k\cdot\overline{d^2}`, :math:`k = -3,\dots,1`.

    The common DAN choice (as in TLlib's DAN and JAN examples): bandwidths from an eighth of the
    batch's mean squared distance to twice it, so some kernel stays informative whatever the
    features' scale.
    """
    return [GaussianKernel(alpha=2.0**k) for k in range(-3, 2)]


def _kernel_sum(kernels: Sequence[nn.Module], sq_dist: Tensor, mean_sq_dist: Tensor) -> Tensor:
    return sum(kernel(sq_dist, mean_sq_dist) for kernel in kernels)


def kernel_mmd(
    layers: Sequence[tuple[Tensor, Tensor]],
    kernels: Sequence[Sequence[nn.Module]],
    *,
    linear: bool,
    who: str,
) -> Tensor:
    r"""Squared MMD of source and target under the product over layers of kernel sums.

    Each sample point :math:`z` has one representation :math:`z^\ell` per layer (a row of that
    layer's ``(n, D_ℓ)`` / ``(m, D_ℓ)`` pair); the joint kernel is
    :math:`k(z, z') = \prod_\ell \sum_u k_{\ell u}(\lVert z^\ell - z'^\ell\rVert^2)`. With source
    :math:`\{x_i\}_{i=1}^n` and target :math:`\{y_j\}_{j=1}^m`:

    * ``linear=False`` — the unbiased U-statistic (batch sizes may differ, each >= 2):

      .. math::
          \frac{1}{n(n-1)}\sum_{i\ne i'} k(x_i,x_{i'})
          + \frac{1}{m(m-1)}\sum_{j\ne j'} k(y_j,y_{j'})
          - \frac{2}{nm}\sum_{i,j} k(x_i,y_j);

    * ``linear=True`` — the linear-time estimate over quad-tuples
      :math:`(x_{2i-1}, x_{2i}, y_{2i-1}, y_{2i})` (equal batch sizes; an odd last sample is
      dropped):

      .. math::
          \frac{2}{n}\sum_{i=1}^{n/2} \big[k(x_{2i-1},x_{2i}) + k(y_{2i-1},y_{2i})
          - k(x_{2i-1},y_{2i}) - k(x_{2i},y_{2i-1})\big].

    A kernel with an adaptive bandwidth gets its layer's mean squared distance over the pairs of
    distinct points the estimator looks at (all pairs of the joint batch; linear: the pairs used,
    so the cost stays linear), detached.

    Args:
        layers: per layer, the checked source and target batches ``(n, D_ℓ)``, ``(m, D_ℓ)``.
        kernels: per layer, the kernels summed on it, each called as
            ``kernel(sq_dist, mean_sq_dist)``.
        linear: use the linear-time estimate.
        who: the caller's name, for the error message.
    """
    n, m = layers[0][0].shape[0], layers[0][1].shape[0]
    if linear:
        if n != m:
            raise ConfigError(
                f"{who}(linear=True) pairs source and target samples, so both batches must have "
                f"the same size; got {n} source and {m} target samples. Draw equal batch sizes or "
                "use linear=False."
            )
        half = n // 2
        joint = None
        for (f_s, f_t), layer_kernels in zip(layers, kernels, strict=True):
            x1, x2 = f_s[0 : 2 * half : 2], f_s[1 : 2 * half : 2]
            y1, y2 = f_t[0 : 2 * half : 2], f_t[1 : 2 * half : 2]
            # The four squared distances of each quad-tuple: (x1,x2), (y1,y2), (x1,y2), (x2,y1).
            sq_dist = torch.stack(
                [((a - b) ** 2).sum(dim=1) for a, b in ((x1, x2), (y1, y2), (x1, y2), (x2, y1))]
            )
            k = _kernel_sum(layer_kernels, sq_dist, sq_dist.detach().mean())
            joint = k if joint is None else joint * k
        return (joint[0] + joint[1] - joint[2] - joint[3]).mean()

    total = n + m
    off_diag = ~torch.eye(total, dtype=torch.bool, device=layers[0][0].device)
    joint = None
    for (f_s, f_t), layer_kernels in zip(layers, kernels, strict=True):
        z = torch.cat([f_s, f_t], dim=0)
        sq_norm = (z * z).sum(dim=1)
        # ‖a‖² + ‖b‖² − 2a·b can dip below 0 by rounding; a distance cannot.
        sq_dist = (sq_norm[:, None] + sq_norm[None, :] - 2.0 * z @ z.T).clamp_min(0.0)
        k = _kernel_sum(layer_kernels, sq_dist, sq_dist.detach()[off_diag].mean())
        joint = k if joint is None else joint * k
    k_ss, k_tt, k_st = joint[:n, :n], joint[n:, n:], joint[:n, n:]
    term_ss = (k_ss.sum() - k_ss.diagonal().sum()) / (n * (n - 1))
    term_tt = (k_tt.sum() - k_tt.diagonal().sum()) / (m * (m - 1))
    return term_ss + term_tt - 2.0 * k_st.mean()
