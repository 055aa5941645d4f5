r"""Auto-Lambda: task weights meta-learned on the main task's validation loss, by one-step
lookahead.

Liu, Davison & Johns, *Auto-Lambda: Disentangling Dynamic Task Relationships*, TMLR 2022. The
training loss is ``Σ_k λ_k L_k``; the weights λ are learned so that one training step with them
lowers the main task's validation loss::

    θ'(λ) = θ − α ∇_θ Σ_k λ_k L_k^train(θ)            (the virtual step)
    λ ← λ − β ∇_λ L_main^val(θ'(λ))                   (the meta step, Adam with rate β)
    θ ← the ordinary step on Σ_k λ_k L_k^train        (with the updated λ)

θ is every trained parameter (shared and heads). Since ``∂θ'/∂λ_k = −α g_k`` with
``g_k = ∇_θ L_k^train(θ)``, the meta-gradient is ``∂L_val/∂λ_k = −α ∇_θ' L_val(θ') · g_k``.
The reference code approximates ``∇_θ' L_val · g_k`` by a finite difference of the training
loss along ``∇_θ' L_val``; here the same product is computed exactly from the per-task
gradients, which the method needs anyway (K backward passes plus one forward and backward of the
validation loss at θ'). The virtual step is a plain gradient step of size ``lr`` (the reference
code also folds in SGD's momentum and weight decay; the routes train with AdamW, whose step is
not the gradient's, so the plain step is the paper's formula). λ starts at ``init`` (0.1, the
reference default) and the meta optimiser is Adam (β₁ = 0.9, β₂ = 0.999), as in the reference
code. One departure, on by default: λ is kept ≥ ``min_weight`` (0) after each meta step, so a
loss is never ascended; ``min_weight=None`` leaves λ unconstrained as in the reference code.

The validation loss comes from a function the caller attaches with :meth:`AutoLambda.attach`:
``validation(params, values)`` returns the main task's loss on a validation batch with each
parameter of ``params`` replaced by the tensor at the same place in ``values`` (e.g. through
:func:`torch.func.functional_call`). The Multi-Task Learning route attaches one that reads the
main task's validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from tlroutes.checks import finite, positive
from tlroutes.errors import ConfigError
from tlroutes.objectives.mtl.base import TaskBatch, Weighting, graph_leaves
from tlroutes.objectives.mtl.gradients import add_flat_grad, task_gradients
from tlroutes.objectives.mtl.gradsim import main_index
from tlroutes.objectives.mtl.registry import register_weighting

#: ``validation(params, values) -> main-task validation loss`` (see the module docstring)
Validation = Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor]

_BETAS = (0.9, 0.999)
_EPS = 1e-8


@register_weighting("auto_lambda", gradient_based=True, auxiliary=True)
class AutoLambda(Weighting):
    """Auto-Lambda (Liu et al. 2022): weights λ learned by one-step lookahead on the main task's
    validation loss (see the module docstring for the formulas).

    λ, Adam's moments (float64) and its step counts are buffers: ``state_dict()`` resumes
    them. Logs:
    ``weights`` (λ after this step's meta update, 0 for skipped tasks), ``lambdas`` (all of λ)
    and ``val_loss`` (the main validation loss at θ').

    Args:
        num_tasks: K.
        main: the main task's number (0 to K-1). Default 0; the Multi-Task Learning route sets
            it from ``importance:``.
        lr: α, the size of the virtual step. Default 1e-3; the Multi-Task Learning route sets
            it to the run's learning rate unless given.
        meta_lr: β, Adam's rate for λ. Default 1e-4 (the reference code's rate for dense
            prediction tasks).
        init: the starting λ of every task. Default 0.1 (the reference default).
        min_weight: the floor of λ after each meta step. Default 0.0; None for no floor.
    """

    def __init__(self, *, num_tasks: int, main: int = 0, lr: float = 1e-3,
                 meta_lr: float = 1e-4, init: float = 0.1,
                 min_weight: float | None = 0.0) -> None:
        super().__init__(num_tasks=num_tasks)
        self.main = main_index(main, num_tasks)
        self.lr = positive("lr", lr)
        self.meta_lr = positive("meta_lr", meta_lr)
        init = finite("init", init)
        self.min_weight = None if min_weight is None else finite("min_weight", min_weight)
        if self.min_weight is not None and init < self.min_weight:
            raise ConfigError(f"init ({init}) is below min_weight ({self.min_weight}).")
        # float64 whatever the default dtype: Adam's bias corrections (1 − 0.999^t) lose
        # digits in float32, and λ is K numbers
        f64 = torch.float64
        self.register_buffer("lambdas", torch.full((num_tasks,), float(init), dtype=f64))
        self.register_buffer("adam_m", torch.zeros(num_tasks, dtype=f64))
        self.register_buffer("adam_v", torch.zeros(num_tasks, dtype=f64))
        self.register_buffer("adam_steps", torch.zeros(num_tasks, dtype=torch.long))
        self._validation: Validation | None = None

    def extra_repr(self) -> str:
        return (f"num_tasks={self.num_tasks}, main={self.main}, lr={self.lr}, "
                f"meta_lr={self.meta_lr}, min_weight={self.min_weight}")

    def attach(self, validation: Validation) -> None:
        """Give the function that computes the main task's validation loss at given parameters
        (``validation(params, values)``; see the module docstring)."""
        if not callable(validation):
            raise ConfigError("attach() needs a function validation(params, values) -> loss.")
        self._validation = validation

    def _backward(self, batch: TaskBatch) -> dict:
        if self._validation is None:
            raise ConfigError(
                "auto_lambda learns its weights on the main task's validation loss: attach a "
                "function first, weighting.attach(validation) (the Multi-Task Learning route "
                "does this itself).")
        tparams = batch.task_params
        if tparams is None:
            tparams = graph_leaves(batch.losses, exclude=batch.shared)
        params = [*batch.shared, *tparams]
        G, used = task_gradients(batch.losses, params)
        idx = torch.tensor(batch.index)
        lam = self.lambdas[idx].to(G)

        # the virtual step θ' = θ − α Σ λ_k g_k, as fresh leaves for the validation gradient
        step = (lam @ G) * self.lr
        values, offset = [], 0
        for p in params:
            n = p.numel()
            v = (p.detach() - step[offset:offset + n].view_as(p).to(p.dtype))
            values.append(v.requires_grad_())
            offset += n
        val = self._validation(params, values)
        grads = torch.autograd.grad(val, values, allow_unused=True)
        gv = torch.cat([torch.zeros(v.numel(), dtype=G.dtype, device=G.device) if g is None
                        else g.reshape(-1).to(G) for g, v in zip(grads, values, strict=True)])
        meta_grad = (-self.lr * (G @ gv)).detach().cpu().to(self.adam_m.dtype)
        self._adam(idx, meta_grad)

        lam = self.lambdas[idx].to(G)
        add_flat_grad(params, lam @ G, used)
        return {"weights": batch.full(self.lambdas[idx]),
                "lambdas": self.lambdas.detach().cpu().clone(),
                "val_loss": float(val.detach())}

    def _adam(self, idx: Tensor, grad: Tensor) -> None:
        """One Adam step on ``λ[idx]`` (each task's own step count: a skipped task waits)."""
        b1, b2 = _BETAS
        dev = self.lambdas.device
        idx = idx.to(dev)
        grad = grad.to(dev)
        self.adam_steps[idx] += 1
        t = self.adam_steps[idx].to(self.adam_m.dtype)
        m = b1 * self.adam_m[idx] + (1 - b1) * grad
        v = b2 * self.adam_v[idx] + (1 - b2) * grad * grad
        self.adam_m[idx], self.adam_v[idx] = m, v
        update = self.meta_lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + _EPS)
        new = self.lambdas[idx] - update
        if self.min_weight is not None:
            new = new.clamp_min(self.min_weight)
        self.lambdas[idx] = new
