r"""The machinery of the gradient-manipulating weightings: per-task gradients, a K × K problem,
one combined update.

How a :class:`GradientWeighting` (PCGrad, MGDA, CAGrad, Nash-MTL, TorchJD's aggregators) works
---------------------------------------------------------------------------------------------

1. One ``torch.autograd.grad`` per active task on the shared parameters gives the task gradients,
   flattened into ``G`` of shape ``(K, P)`` (K backward passes through the shared part):
   :func:`task_gradients`.
2. Every one of these methods only needs inner products between task gradients, so each solves a
   ``K × K`` problem on the Gram matrix ``M = G Gᵀ`` (in float64) and returns coefficients ``β``;
   the shared update is ``d = βᵀ G``, added to the shared parameters' ``.grad``
   (:func:`add_flat_grad`).
3. The other trained parameters (heads) get the gradient of ``Σ_k h_k L_k`` in a second backward
   restricted to them (cheap: it stops where the shared part starts). ``h_k`` follows each
   method's reference implementation (1 — each head its own loss — for PCGrad, CAGrad and
   TorchJD's ``mtl_backward``; ``α_k`` for MGDA and Nash-MTL).

With no shared parameter requiring grad (a frozen trunk), there is nothing to manipulate and they
fall back to one backward of the plain sum (``fallback`` is True in the logs).

Cost: step 1 is K backward passes through the shared part, so a step costs roughly
``(forward + K · backward)`` against ``(forward + backward)`` for the plain sum. ``on="features"``
is the cheaper route: the method is applied to the per-batch feature gradients ``∂L_k/∂Z`` of the
shared representation ``Z`` (``shared_features``) — K backward passes through the heads only —
and the combined ``∂/∂Z`` is back-propagated once through everything upstream of ``Z`` (an
approximation, as LibMTL's ``rep_grad`` option). See ``benchmarks/mtl_weighting.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tlroutes.errors import DataError
from tlroutes.objectives.mtl.base import TaskBatch, Weighting, choice

__all__ = ["GradientWeighting", "add_flat_grad", "features_or_raise", "gram_of", "task_gradients"]

#: where a gradient method takes its task gradients
ON_CHOICES = ("params", "features")


def task_gradients(losses: Sequence[Tensor], inputs: Sequence[Tensor]) -> tuple[Tensor, list[bool]]:
    """One gradient per loss w.r.t. ``inputs``, flattened: a ``(K, P)`` matrix.

    The matrix has the inputs' dtype, at least float32. Returns it and, per input, whether any
    loss reached it (unreached inputs keep their ``.grad`` untouched, as with ``loss.backward()``).
    The graph is retained.
    """
    sizes = [t.numel() for t in inputs]
    dtype = torch.promote_types(inputs[0].dtype, torch.float32) if inputs else torch.float32
    device = inputs[0].device
    out = torch.zeros(len(losses), sum(sizes), dtype=dtype, device=device)
    used = [False] * len(inputs)
    for row, loss in enumerate(losses):
        if not loss.requires_grad:
            continue  # a constant: a zero gradient
        grads = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
        offset = 0
        for i, (g, n) in enumerate(zip(grads, sizes, strict=True)):
            if g is not None:
                out[row, offset : offset + n] = g.reshape(-1)
                used[i] = True
            offset += n
    return out, used


def gram_of(G: Tensor) -> np.ndarray:
    """The Gram matrix ``G Gᵀ`` as a float64 numpy array (the K × K solvers' input)."""
    return (G @ G.T).double().cpu().numpy()


def add_flat_grad(params: Sequence[Tensor], flat: Tensor, used: Sequence[bool]) -> None:
    """Add slices of the flat vector ``flat`` to each parameter's ``.grad``."""
    offset = 0
    for p, u in zip(params, used, strict=True):
        n = p.numel()
        if u:
            g = flat[offset : offset + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.add_(g)
        offset += n


def features_or_raise(batch: TaskBatch, who: str) -> Tensor:
    """``batch.features``, or :class:`DataError` when it is missing or detached."""
    Z = batch.features
    if Z is None or not Z.requires_grad:
        raise DataError(
            f"{who} needs shared_features: the shared representation the heads read, a tensor "
            "that requires grad (do not detach it)."
        )
    return Z


class GradientWeighting(Weighting):
    """Per-task gradients on the shared parameters → ``K × K`` Gram problem → combined update.

    Subclasses implement :meth:`_solve`. See the module docstring.

    Args:
        num_tasks: K.
        on: ``"params"`` (default: the task gradients on the shared parameters, K backward passes
            through the trunk) or ``"features"`` (an approximation, cheaper: task gradients
            w.r.t. ``shared_features`` Z — K backward passes through the heads only —, the
            method applied to them, and the combined ``∂/∂Z`` back-propagated once through
            everything upstream of Z; conflicts are then measured between per-batch feature
            gradients rather than parameter gradients).
    """

    def __init__(self, *, num_tasks: int, on: str = "params") -> None:
        super().__init__(num_tasks=num_tasks)
        self.on = choice("on", on, ON_CHOICES)

    @abc.abstractmethod
    def _solve(self, gram: np.ndarray, batch: TaskBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        """Return ``(β, head weights, logs)`` for the active tasks from the float64 Gram matrix."""

    def _backward(self, batch: TaskBatch) -> dict:
        if not batch.shared:
            w = torch.ones(len(batch.index))
            self._backward_weighted(batch, w)
            return {"weights": batch.full(w), "fallback": True}
        if self.on == "features":
            return self._backward_features(batch)
        G, used = task_gradients(batch.losses, batch.shared)
        gram = gram_of(G)
        beta, head_w, logs = self._solve(gram, batch)
        d = torch.as_tensor(beta, dtype=G.dtype, device=G.device) @ G
        add_flat_grad(batch.shared, d, used)
        self._backward_task_params(batch, torch.as_tensor(head_w))
        logs["weights"] = batch.full(beta)
        logs["conflicts"] = int((np.triu(gram, 1) < 0).sum())
        return logs

    def _backward_features(self, batch: TaskBatch) -> dict:
        """The representation-gradient variant: solve on ``∂L_k/∂Z``, backprop ``βᵀ G_Z``."""
        Z = features_or_raise(batch, f"{type(self).__name__}(on='features')")
        Gz, _ = task_gradients(batch.losses, [Z])
        gram = gram_of(Gz)
        beta, head_w, logs = self._solve(gram, batch)
        dz = (torch.as_tensor(beta, dtype=Gz.dtype, device=Gz.device) @ Gz).view_as(Z)
        self._backward_task_params(batch, torch.as_tensor(head_w), stop_at=Z)
        torch.autograd.backward(Z, grad_tensors=dz.to(Z.dtype))
        logs["weights"] = batch.full(beta)
        logs["conflicts"] = int((np.triu(gram, 1) < 0).sum())
        logs["on"] = "features"
        return logs
