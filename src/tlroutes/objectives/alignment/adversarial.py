"""The adversarial machinery shared by DANN and CDAN: gradient reversal and a domain discriminator.

- :class:`GradientReverse` / :func:`grad_reverse` — identity forward, ``-coeff ·`` gradient
  backward (Ganin & Lempitsky, ICML 2015);
- :func:`dann_coefficient` and :class:`WarmStartGradientReverse` — the reversal coefficient's
  warm-up λ(p) = 2/(1 + exp(−γp)) − 1 (Ganin et al., JMLR 2016), counted in a persistent buffer so
  a resumed run continues the schedule;
- :class:`DomainDiscriminator` — the MLP that tells source from target;
- :func:`domain_bce` — the discriminator's binary cross-entropy, averaged per domain.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.checks import positive, positive_int

__all__ = [
    "GradientReverse",
    "grad_reverse",
    "dann_coefficient",
    "WarmStartGradientReverse",
    "DomainDiscriminator",
    "domain_bce",
]


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
        self.max_steps = positive_int("max_steps", max_steps)
        self.gamma = positive("gamma", gamma)
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
        positive_int("in_dim", in_dim)
        positive_int("hidden", hidden)
        positive_int("depth", depth, minimum=0)
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


def domain_bce(logits: Tensor, n_s: int, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Domain BCE averaged per domain, then over the two domains; and the domain accuracy.

    .. math::
        \mathcal{L} = \tfrac12\Big[\tfrac{1}{n_s}\sum_{i\le n_s} w_i\,\mathrm{BCE}(z_i, 1)
                    + \tfrac{1}{n_t}\sum_{j>n_s} w_j\,\mathrm{BCE}(z_j, 0)\Big]

    Averaging each domain on its own makes unequal batch sizes weigh the same.

    Args:
        logits: discriminator logits ``z``, ``(n_s + n_t,)`` or ``(n_s + n_t, 1)``; the first
            ``n_s`` rows are source (label 1), the rest target (label 0).
        n_s: number of source rows.
        weight: per-sample weights ``w`` ``(n_s + n_t,)``; None for all ones. Default None.

    Returns:
        The loss (scalar) and the accuracy of ``z > 0`` as the source call, averaged per domain
        like the loss (a 0-dim tensor without gradient).
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
