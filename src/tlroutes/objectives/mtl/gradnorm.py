r"""GradNorm: learn loss weights that balance the tasks' gradient norms.

Chen, Badrinarayanan, Lee & Rabinovich, *GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks*, ICML 2018. With learned weights ``w_k`` and
``G_k = ‖∇_W w_k L_k‖`` on some shared weights ``W``::

    L̃_k = L_k(t) / L_k(0),   r_k = L̃_k / mean_j L̃_j
    L_grad = Σ_k | G_k − mean_j(G_j) · r_k^α |      (the target treated as a constant)

The model is trained on ``Σ_k w_k L_k``; ``w`` descends ``L_grad``, then is renormalised to sum
to K.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from tlroutes.errors import DataError
from tlroutes.objectives.mtl.base import TaskBatch, Weighting, choice, non_negative
from tlroutes.objectives.mtl.registry import register_weighting


# gradient_based: the norms need per-task gradients of shared weights in one process
@register_weighting("gradnorm", gradient_based=True)
class GradNorm(Weighting):
    """GradNorm: loss weights ``w_k`` learned so that the tasks' gradient norms balance.

    The model is trained on ``Σ_k w_k L_k`` (one backward, ``w`` held constant there); ``w`` gets
    the gradient of ``L_grad`` (computed in closed form, ``sign(G_k − target_k) · ‖∇_W L_k‖``) and
    is updated by *your* optimiser — give it ``weighting.parameters()``. As in the paper the
    weights are renormalised to sum to K; this happens at the start of each ``backward()``,
    i.e. right after the previous optimiser step. ``L_k(0)`` is task k's first recorded loss
    (a buffer). Gradient norms cost one partial backward per task, down to ``W``.

    Args:
        num_tasks: K.
        alpha: the restoring force towards balanced training rates (>= 0). Default 1.5.
        on: where the gradient norms are taken: ``"last"`` (default, the paper's choice: the last
            shared layer, i.e. the last shared parameter with ≥ 2 dimensions in the order given),
            ``"all"`` (every shared parameter; exact but K full backward passes) or
            ``"features"`` (the shared representation ``shared_features``, cheapest).
        norm_params: explicit parameters for ``W`` (overrides ``on``). Default None.
    """

    def __init__(
        self, *, num_tasks: int, alpha: float = 1.5, on: str = "last",
        norm_params: Iterable[Tensor] | None = None,
    ) -> None:
        super().__init__(num_tasks=num_tasks)
        self.alpha = non_negative("alpha", alpha)
        self.on = choice("on", on, ("last", "all", "features"))
        self._norm_params = None if norm_params is None else list(norm_params)
        self.weights = nn.Parameter(torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.full((num_tasks,), float("nan")))

    def _norm_targets(self, batch: TaskBatch) -> list[Tensor]:
        if self._norm_params is not None:
            return [p for p in self._norm_params if p.requires_grad]
        if self.on == "features":
            if batch.features is None or not batch.features.requires_grad:
                raise DataError(
                    "GradNorm(on='features') needs shared_features, a tensor in the graph that "
                    "requires grad."
                )
            return [batch.features]
        if self.on == "all":
            return batch.shared
        matrices = [p for p in batch.shared if p.dim() >= 2]
        return matrices[-1:] or batch.shared[-1:]

    def _grad_norms(self, batch: TaskBatch, targets: list[Tensor]) -> Tensor:
        """``‖∇_W L_k‖`` per active task, accumulated in float64, in the weights' dtype."""
        norms = []
        for loss in batch.losses:
            sq = torch.zeros((), dtype=torch.float64, device=self.weights.device)
            if loss.requires_grad:
                grads = torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True)
                for g in grads:
                    if g is not None:
                        sq = sq + g.double().pow(2).sum().to(sq.device)
            norms.append(sq.sqrt())
        return torch.stack(norms).to(self.weights.dtype)

    def _backward(self, batch: TaskBatch) -> dict:
        with torch.no_grad():  # the paper's renormalisation, after the last optimiser step
            w_all = self.weights.clamp_min(1e-6)
            self.weights.copy_(w_all * (self.num_tasks / w_all.sum()))
        idx = torch.tensor(batch.index, device=self.weights.device)
        w = self.weights.detach()[idx]
        losses = batch.stacked().detach().to(w)
        init = self.initial_losses[idx].to(w)
        init = torch.where(torch.isnan(init), losses, init)
        self.initial_losses[idx] = init.to(self.initial_losses)
        targets = self._norm_targets(batch)
        if targets:
            n = self._grad_norms(batch, targets)
            G = w * n
            ratio = losses / init.clamp_min(1e-12)
            r = ratio / ratio.mean().clamp_min(1e-12)
            target = G.mean() * r.pow(self.alpha)
            grad_w = torch.zeros_like(self.weights)
            grad_w[idx] = torch.sign(G - target) * n
            if self.weights.grad is None:
                self.weights.grad = grad_w
            else:
                self.weights.grad.add_(grad_w)
            extra = {"grad_norms": batch.full(n)}
        else:
            extra = {"grad_norms": torch.zeros(self.num_tasks)}
        self._backward_weighted(batch, w)
        return {"weights": batch.full(w), **extra}
