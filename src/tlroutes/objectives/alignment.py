"""Unsupervised domain-adaptation losses: align source and target features without target labels.

Each loss is a plain :class:`torch.nn.Module` over features (and, where the method needs them,
classifier logits), so it drops into any training loop::

    f_s, f_t = trunk(x_s), trunk(x_t)          # (B_s, D), (B_t, D)
    g_s, g_t = head(f_s), head(f_t)            # (B_s, K), (B_t, K) logits
    loss = F.cross_entropy(g_s, y_s) + trade_off * align(f_s, f_t)

- :class:`DomainAdversarialLoss` — DANN (Ganin et al., 2015/2016), ``forward(f_s, f_t)``;
- :class:`CorrelationAlignmentLoss` — Deep CORAL (Sun & Saenko, 2016), ``forward(f_s, f_t)``;
- :class:`MultipleKernelMMD` — DAN's MK-MMD (Long et al., 2015), ``forward(f_s, f_t)``;
- :class:`ConditionalDomainAdversarialLoss` — CDAN / CDAN+E (Long et al., 2018),
  ``forward(g_s, f_s, g_t, f_t)``;
- :class:`MinimumClassConfusionLoss` — MCC (Jin et al., 2020), ``forward(g_t)``.

The adversarial losses (DANN, CDAN) hold their own domain discriminator and a gradient reversal
layer, so one optimiser over ``model.parameters()`` *and* ``loss.parameters()`` trains both sides of
the min-max game in a single backward pass. Their warm-up step counter is a persistent buffer, so it
is saved in ``state_dict()`` and a resumed run continues the schedule where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.errors import ConfigError, DataError

__all__ = [
    "GradientReverse",
    "grad_reverse",
    "dann_coefficient",
    "WarmStartGradientReverse",
    "DomainDiscriminator",
    "DomainAdversarialLoss",
    "CorrelationAlignmentLoss",
    "GaussianKernel",
    "MultipleKernelMMD",
    "multilinear_map",
    "RandomizedMultilinearMap",
    "entropy_weights",
    "ConditionalDomainAdversarialLoss",
    "MinimumClassConfusionLoss",
]


# --------------------------------------------------------------------------- helpers


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _features(name: str, x: Tensor, min_rows: int = 1) -> Tensor:
    """Check ``x`` is a batch of features and flatten it to ``(B, D)``."""
    if not isinstance(x, Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.dim() < 2:
        raise DataError(
            f"{name} must be a batch of features of shape (B, D), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) or a feature one with x.unsqueeze(1)."
        )
    if x.shape[0] < min_rows:
        raise DataError(
            f"{name} has {x.shape[0]} sample(s) but this loss needs at least {min_rows} per "
            "domain; use a larger batch."
        )
    return x.flatten(1)


def _same_width(f_s: Tensor, f_t: Tensor) -> None:
    if f_s.shape[1] != f_t.shape[1]:
        raise DataError(
            f"Source and target features must have the same width, got {f_s.shape[1]} and "
            f"{f_t.shape[1]}; pass both domains through the same trunk."
        )


def _prediction_entropy(probs: Tensor) -> Tensor:
    """Shannon entropy (nats) of each row of ``probs`` (B, K), with 0·log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def _domain_bce(logits: Tensor, n_s: int, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Domain BCE averaged per domain, then over the two domains; and the domain accuracy.

    The first ``n_s`` rows are source (label 1), the rest target (label 0).
    """
    logits = logits.reshape(-1)
    labels = torch.zeros_like(logits)
    labels[:n_s] = 1.0
    per_sample = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if weight is not None:
        per_sample = per_sample * weight
    loss = 0.5 * (per_sample[:n_s].mean() + per_sample[n_s:].mean())
    with torch.no_grad():
        correct = ((logits > 0).to(labels.dtype) == labels).to(logits.dtype)
        accuracy = 0.5 * (correct[:n_s].mean() + correct[n_s:].mean())
    return loss, accuracy


# --------------------------------------------------------------------------- gradient reversal


class GradientReverse(torch.autograd.Function):
    """Gradient reversal (Ganin & Lempitsky, ICML 2015): identity forward, ``-coeff ·`` backward.

    ``GradientReverse.apply(x, coeff)`` returns ``x`` unchanged; in the backward pass the gradient
    that reaches ``x`` is ``-coeff * grad_output``. ``coeff`` is a float or a 0-dim tensor (a tensor
    avoids a device sync when it is computed on the GPU). It receives no gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, coeff: float | Tensor) -> Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        coeff = ctx.coeff
        if isinstance(coeff, Tensor):
            coeff = coeff.to(device=grad_output.device, dtype=grad_output.dtype)
        return -coeff * grad_output, None


def grad_reverse(x: Tensor, coeff: float | Tensor = 1.0) -> Tensor:
    """Functional gradient reversal: ``x`` forward, ``-coeff * grad`` backward."""
    return GradientReverse.apply(x, coeff)


def dann_coefficient(
    step: int, max_steps: int, gamma: float = 10.0, lo: float = 0.0, hi: float = 1.0
) -> float:
    """The DANN warm-up schedule λ(p) = 2(hi−lo) / (1 + exp(−γp)) − (hi−lo) + lo.

    ``p = clip(step / max_steps, 0, 1)``. With the defaults λ rises from 0 at ``p = 0`` through
    ≈0.987 at ``p = 0.5`` to ≈0.99991 at ``p = 1`` (Ganin et al., JMLR 2016, with γ = 10).
    """
    p = min(max(step / max_steps, 0.0), 1.0)
    return 2.0 * (hi - lo) / (1.0 + math.exp(-gamma * p)) - (hi - lo) + lo


class WarmStartGradientReverse(nn.Module):
    r"""Gradient reversal layer whose coefficient warms up with DANN's schedule.

    Forward is the identity. Backward multiplies the incoming gradient by :math:`-\lambda(p)` with

    .. math::
        \lambda(p) = \frac{2(\text{hi}-\text{lo})}{1 + \exp(-\gamma p)} - (\text{hi}-\text{lo})
                     + \text{lo}, \qquad p = \min(\max(\text{step}/\text{max\_steps}, 0), 1),

    so the reversed signal starts at ``lo`` (0: the discriminator is noisy early on and should not
    yet steer the features) and approaches ``hi``. Paper: Ganin & Lempitsky, "Unsupervised Domain
    Adaptation by Backpropagation", ICML 2015; Ganin et al., "Domain-Adversarial Training of Neural
    Networks", JMLR 2016 (γ = 10).

    The layer counts its own steps: each forward **in training mode** uses λ at the current step
    and then adds one (``auto_step=True``); call :meth:`step` yourself with ``auto_step=False``.
    The counter is the persistent buffer ``num_steps`` (an int64 tensor in ``state_dict()``), so
    saving and loading the module, or a model that holds it, resumes the schedule exactly.

    Args:
        max_steps: steps over which ``p`` goes from 0 to 1 (usually the total number of training
            steps). Default 1000.
        gamma: steepness γ of the schedule. Default 10.0.
        lo: coefficient at ``p = 0``. Default 0.0.
        hi: coefficient approached as ``p`` grows; at ``p = 1`` λ is
            ``lo + (hi-lo)·tanh(γ/2)`` (0.99991 with the defaults). Default 1.0.
        auto_step: count a step on every training-mode forward. Default True.

    Shape:
        input ``(*)`` → output ``(*)``, the same tensor values.
    """

    num_steps: Tensor

    def __init__(
        self,
        max_steps: int = 1000,
        gamma: float = 10.0,
        lo: float = 0.0,
        hi: float = 1.0,
        auto_step: bool = True,
    ):
        super().__init__()
        self.max_steps = _positive_int("max_steps", max_steps)
        self.gamma = _positive("gamma", gamma)
        self.lo = float(lo)
        self.hi = float(hi)
        self.auto_step = bool(auto_step)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long), persistent=True)

    def coefficient(self) -> float:
        """λ at the current step (the value the next forward will use), as a float."""
        return dann_coefficient(
            int(self.num_steps.item()), self.max_steps, self.gamma, self.lo, self.hi
        )

    def _coefficient_tensor(self) -> Tensor:
        # Computed on the buffer's device so that a GPU loop does not sync on .item().
        p = (self.num_steps.to(torch.float32) / self.max_steps).clamp(0.0, 1.0)
        span = self.hi - self.lo
        return 2.0 * span / (1.0 + torch.exp(-self.gamma * p)) - span + self.lo

    def step(self) -> None:
        """Advance the schedule by one step."""
        with torch.no_grad():
            self.num_steps.add_(1)

    def forward(self, x: Tensor) -> Tensor:
        coeff = self._coefficient_tensor()
        if self.training and self.auto_step:
            self.step()
        return GradientReverse.apply(x, coeff)

    def extra_repr(self) -> str:
        return (
            f"max_steps={self.max_steps}, gamma={self.gamma}, lo={self.lo}, hi={self.hi}, "
            f"auto_step={self.auto_step}"
        )


# --------------------------------------------------------------------------- DANN


class DomainDiscriminator(nn.Sequential):
    """An MLP that tells source from target: ``(B, in_dim)`` features → ``(B, 1)`` logits.

    ``depth`` hidden blocks of ``Linear → BatchNorm1d → ReLU`` (``Linear → ReLU → Dropout(0.5)``
    with ``batch_norm=False``), then ``Linear(hidden, 1)``. The output is a *logit* (no sigmoid):
    the losses use ``binary_cross_entropy_with_logits``, which is numerically safer.

    Batch norm is on by default, as in TLlib's discriminator used for DANN/CDAN: it keeps the
    discriminator's input scale steady while the features it judges keep moving. Its batch
    statistics are those of the concatenated source+target batch, so it needs at least two samples
    in training mode; switch it off (``batch_norm=False``) for tiny or single-sample batches.

    Args:
        in_dim: feature width D.
        hidden: width of each hidden layer. Default 256.
        depth: number of hidden blocks; 0 gives a logistic-regression discriminator. Default 2.
        batch_norm: use BatchNorm1d in the hidden blocks (else Dropout(0.5)). Default True.
    """

    def __init__(self, in_dim: int, hidden: int = 256, depth: int = 2, batch_norm: bool = True):
        _positive_int("in_dim", in_dim)
        _positive_int("hidden", hidden)
        _positive_int("depth", depth, minimum=0)
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            if batch_norm:
                layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            else:
                layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(0.5)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)
        self.in_dim = in_dim


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

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s = _features("f_s", f_s)
        f_t = _features("f_t", f_t)
        _same_width(f_s, f_t)
        logits = self.discriminator(self.grl(torch.cat([f_s, f_t], dim=0)))
        loss, accuracy = _domain_bce(logits, f_s.shape[0])
        self.last_accuracy = float(accuracy)
        return loss


# --------------------------------------------------------------------------- CORAL


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
        flattened; batch sizes may differ) → scalar.
    """

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s = _features("f_s", f_s, min_rows=2)
        f_t = _features("f_t", f_t, min_rows=2)
        _same_width(f_s, f_t)
        d = f_s.shape[1]
        diff = _covariance(f_s) - _covariance(f_t)
        return (diff * diff).sum() / (4.0 * d * d)


def _covariance(x: Tensor) -> Tensor:
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / (x.shape[0] - 1)


# --------------------------------------------------------------------------- MK-MMD


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
        self.sigma = None if sigma is None else _positive("sigma", sigma)
        self.alpha = _positive("alpha", alpha)

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
        ``f_s`` ``(n, D)``, ``f_t`` ``(m, D)`` (extra dims are flattened) → scalar.
    """

    def __init__(self, kernels: Sequence[nn.Module] | None = None, linear: bool = False):
        super().__init__()
        if kernels is None:
            kernels = [GaussianKernel(alpha=2.0**k) for k in range(-3, 2)]
        kernels = list(kernels)
        if not kernels:
            raise ConfigError("MultipleKernelMMD needs at least one kernel, got an empty list.")
        self.kernels = nn.ModuleList(kernels)
        self.linear = bool(linear)

    def _kernel_sum(self, sq_dist: Tensor, mean_sq_dist: Tensor) -> Tensor:
        return sum(kernel(sq_dist, mean_sq_dist) for kernel in self.kernels)

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s = _features("f_s", f_s, min_rows=2)
        f_t = _features("f_t", f_t, min_rows=2)
        _same_width(f_s, f_t)
        if self.linear:
            return self._linear(f_s, f_t)
        n, m = f_s.shape[0], f_t.shape[0]
        z = torch.cat([f_s, f_t], dim=0)
        sq_norm = (z * z).sum(dim=1)
        sq_dist = (sq_norm[:, None] + sq_norm[None, :] - 2.0 * z @ z.T).clamp_min(0.0)
        total = n + m
        off_diag = ~torch.eye(total, dtype=torch.bool, device=z.device)
        mean_sq_dist = sq_dist.detach()[off_diag].mean()
        k = self._kernel_sum(sq_dist, mean_sq_dist)
        k_ss, k_tt, k_st = k[:n, :n], k[n:, n:], k[:n, n:]
        term_ss = (k_ss.sum() - k_ss.diagonal().sum()) / (n * (n - 1))
        term_tt = (k_tt.sum() - k_tt.diagonal().sum()) / (m * (m - 1))
        return term_ss + term_tt - 2.0 * k_st.mean()

    def _linear(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        if f_s.shape[0] != f_t.shape[0]:
            raise ConfigError(
                "MultipleKernelMMD(linear=True) pairs source and target samples, so both "
                f"batches must have the same size; got {f_s.shape[0]} source and {f_t.shape[0]} "
                "target samples. Draw equal batch sizes or use linear=False."
            )
        half = f_s.shape[0] // 2
        x1, x2 = f_s[0 : 2 * half : 2], f_s[1 : 2 * half : 2]
        y1, y2 = f_t[0 : 2 * half : 2], f_t[1 : 2 * half : 2]
        # The four squared distances of each quad-tuple: (x1,x2), (y1,y2), (x1,y2), (x2,y1).
        sq_dist = torch.stack(
            [((a - b) ** 2).sum(dim=1) for a, b in ((x1, x2), (y1, y2), (x1, y2), (x2, y1))]
        )
        k = self._kernel_sum(sq_dist, sq_dist.detach().mean())
        return (k[0] + k[1] - k[2] - k[3]).mean()


# --------------------------------------------------------------------------- CDAN


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
        self.out_dim = _positive_int("randomized_dim", out_dim)
        self.register_buffer("R_f", torch.randn(_positive_int("feature_dim", feature_dim), out_dim))
        self.register_buffer("R_g", torch.randn(_positive_int("num_classes", num_classes), out_dim))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        return (f @ self.R_f.to(f.dtype)) * (g @ self.R_g.to(g.dtype)) / math.sqrt(self.out_dim)


def entropy_weights(probs: Tensor) -> Tensor:
    """CDAN+E's certainty weights ``w = 1 + exp(-H(p))`` per row of ``probs`` (B, K), unnormalised.

    ``H`` is the Shannon entropy in nats, so ``w`` runs from ``1 + 1/K`` (uniform prediction) to
    2 (one-hot prediction).
    """
    return 1.0 + torch.exp(-_prediction_entropy(probs))


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
        self.feature_dim = _positive_int("feature_dim", feature_dim)
        self.num_classes = _positive_int("num_classes", num_classes)
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
        f_s, f_t = _features("f_s", f_s), _features("f_t", f_t)
        _same_width(f_s, f_t)
        for name, g, f in (("g_s", g_s, f_s), ("g_t", g_t, f_t)):
            if g.dim() != 2 or g.shape[0] != f.shape[0] or g.shape[1] != self.num_classes:
                raise DataError(
                    f"{name} must be logits of shape (B, {self.num_classes}) with the same B as "
                    f"its features ({f.shape[0]}), got {tuple(g.shape)}."
                )
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
        loss, accuracy = _domain_bce(logits, n_s, weight)
        self.last_accuracy = float(accuracy)
        return loss


# --------------------------------------------------------------------------- MCC


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
        self.temperature = _positive("temperature", temperature)

    def forward(self, logits_t: Tensor) -> Tensor:
        if not isinstance(logits_t, Tensor) or logits_t.dim() != 2:
            raise DataError(
                "MinimumClassConfusionLoss expects target logits of shape (B, K), got "
                f"{tuple(getattr(logits_t, 'shape', ()))}."
            )
        batch, num_classes = logits_t.shape
        probs = F.softmax(logits_t / self.temperature, dim=1)
        w = entropy_weights(probs.detach())
        w = batch * w / w.sum()
        confusion = (probs * w[:, None]).T @ probs
        row_sum = confusion.sum(dim=1, keepdim=True).clamp_min(torch.finfo(confusion.dtype).tiny)
        confusion = confusion / row_sum
        return (confusion.sum() - confusion.trace()) / num_classes
