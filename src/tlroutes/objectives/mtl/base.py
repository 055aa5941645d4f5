r"""The contract every multi-task weighting keeps: K task losses and the shared parameters in,
gradients out.

Every method is an :class:`torch.nn.Module` with one method, :meth:`Weighting.backward`, that
replaces ``loss.backward()`` in any training loop::

    weighting = create_weighting("pcgrad", num_tasks=3)
    opt = torch.optim.AdamW([*model.parameters(), *weighting.parameters()], lr=1e-3)
    for x, ys in loader:
        feats = model.trunk(x)
        losses = [F.cross_entropy(head(feats), y) for head, y in zip(model.heads, ys)]
        opt.zero_grad()
        logs = weighting.backward(losses, model.trunk.parameters(), shared_features=feats)
        opt.step()

Always hand ``weighting.parameters()`` to the optimiser: Uncertainty Weighting and GradNorm learn
their task weights by gradient descent (the other methods have no parameters, so it costs nothing).

The contract of ``backward(losses, shared_params, shared_features=None, task_params=None, *, mask)``
--------------------------------------------------------------------------------------------------

- **losses** — the K task losses: a tensor of shape ``(K,)`` or a sequence of K scalar tensors.
- **A task is skipped** when ``mask[k]`` is False, when its entry is ``None``, or when its loss is
  NaN (the usual value of a mean over an empty selection, e.g. a batch with no label for that
  task). A skipped task contributes no gradient and takes no part in the weighting: it gets weight
  0, its learned weight (UW, GradNorm) gets no gradient, and its loss is not recorded in any history
  (DWA, GradNorm). The remaining tasks are weighted among themselves. Prefer a sequence with
  ``None`` (or its own scalar per task) to a stacked ``(K,)`` tensor when losses may be NaN: with a
  stacked tensor, autograd still sends a zero gradient into the skipped task's graph, which is
  harmless unless that graph itself yields NaN under a zero upstream gradient. Inf is not treated
  as missing (a diverging loss should stop training, not be hidden).
- **shared_params** — the parameters every task reads (an iterable of parameters or a module).
  Only those that require grad count. The gradient-manipulating methods compute one gradient per
  task on them, combine, and *add* the result to ``.grad`` (see
  :mod:`tlroutes.objectives.mtl.gradients`).
- **task_params** — everything else that is trained (heads, and shared parameters you did not list)
  receives the ordinary gradient of ``Σ_k w_k L_k`` with the task weights ``w_k`` of the method.
  For the gradient methods this is a second, cheap backward restricted to those parameters; when
  ``task_params`` is None they are found by walking the autograd graph of the losses (give them
  explicitly to skip the walk).
- **shared_features** — the shared representation ``Z`` the heads read (a tensor in the graph, not
  detached). Read by MGDA (its MGDA-UB upper bound, used whenever ``Z`` is given) and by
  ``on="features"`` in the gradient methods and GradNorm; ignored by the others, so a loop may
  always pass it.
- **Gradients accumulate** into ``.grad`` as ``loss.backward()`` does: zero them yourself.
- **Returns** a dict of logs: always ``weights`` (a CPU tensor ``(K,)`` in the default float dtype,
  0 for skipped tasks: the loss weights for the loss-based methods, the coefficients of the task
  gradients in the shared update for the gradient methods) and ``active`` (a CPU bool tensor
  ``(K,)``), plus method-specific entries.

**Dtypes.** A weighting's own parameters and buffers are created in the default float dtype, like
any ``nn.Module``'s, and move with ``.to()``; every weight is cast to the dtype of the losses it
multiplies, so float32 and float64 models both work under either default dtype
(``torch.set_default_dtype``). The K × K problems of the gradient methods are solved in float64.

Random draws (RLW's weights, PCGrad's task order) come from a :class:`torch.Generator` seeded
from ``(seed, step)``; the step counter is a buffer, so ``state_dict()`` resumes the sequence.

These methods are not aware of ``DistributedDataParallel``: under it, the loss-based methods work
as usual, the gradient methods combine each process's own gradients (all-reduce ``.grad``
yourself, inside ``no_sync()``). The registry marks them (``gradient_based=True``).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

# The argument checks live in tlroutes.checks; re-exported here for the weightings.
from tlroutes.checks import check_seed, choice, non_negative, positive, positive_int
from tlroutes.errors import DataError

__all__ = [
    "LossesLike",
    "TaskBatch",
    "Weighting",
    "check_seed",
    "choice",
    "graph_leaves",
    "non_negative",
    "positive",
    "positive_int",
    "step_generator",
    "weighted_sum",
]

LossesLike = Tensor | Sequence[Tensor | float | None]


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded from ``(seed, step)`` (well mixed, reproducible)."""
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator()
    gen.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return gen


# --------------------------------------------------------------------------- one call's input


@dataclass
class TaskBatch:
    """The validated input of one :meth:`Weighting.backward` call (only active tasks kept)."""

    losses: list[Tensor]  # scalar losses of the active tasks, in task order
    index: list[int]  # their task numbers
    num_tasks: int
    shared: list[Tensor]  # shared parameters that require grad
    features: Tensor | None
    task_params: list[Tensor] | None

    @property
    def active(self) -> Tensor:
        """CPU bool ``(K,)``: True for the tasks that take part in this call."""
        mask = torch.zeros(self.num_tasks, dtype=torch.bool)
        mask[self.index] = True
        return mask

    def full(self, values: Tensor | np.ndarray | Sequence[float]) -> Tensor:
        """Scatter per-active-task values into a CPU ``(K,)`` tensor (0 for skipped tasks).

        The result has the default float dtype whatever the values' dtype or device, so that the
        logs of every method look alike (a float64 numpy array from a K × K solver and a float32
        parameter on a GPU alike).
        """
        out = torch.zeros(self.num_tasks)
        if isinstance(values, Tensor):
            values = values.detach().cpu()
        out[self.index] = torch.as_tensor(np.asarray(values, dtype=np.float64)).reshape(-1).to(
            out.dtype
        )
        return out

    def stacked(self) -> Tensor:
        """The active losses as one ``(n_active,)`` tensor (in the graph)."""
        return torch.stack([loss.reshape(()) for loss in self.losses])


def _as_params(params: Iterable[Tensor] | nn.Module | None, what: str) -> list[Tensor]:
    if params is None:
        return []
    if isinstance(params, nn.Module):
        params = params.parameters()
    if isinstance(params, Tensor):
        params = [params]
    out, seen = [], set()
    for p in params:
        if not isinstance(p, Tensor):
            raise DataError(f"{what} must be tensors (parameters), got {type(p).__name__}.")
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def weighted_sum(losses: Sequence[Tensor], weights: Tensor) -> Tensor:
    """``Σ_k w_k L_k`` with the weights moved to the losses' device and dtype."""
    stacked = torch.stack([loss.reshape(()) for loss in losses])
    return (weights.to(device=stacked.device, dtype=stacked.dtype) * stacked).sum()


def graph_leaves(
    roots: Sequence[Tensor], exclude: Iterable[Tensor] = (), stop_at: Tensor | None = None
) -> list[Tensor]:
    """The leaf tensors (parameters) ``roots`` depend on through autograd, minus ``exclude``.

    With ``stop_at`` (an intermediate tensor), the walk does not go past it: only the leaves
    reached without passing through ``stop_at`` are returned.
    """
    skip = {id(t) for t in exclude}
    found: list[Tensor] = []
    seen_nodes: set = set()
    if stop_at is not None:
        if stop_at.grad_fn is not None:
            seen_nodes.add(stop_at.grad_fn)
        else:
            skip.add(id(stop_at))
    stack = [r.grad_fn for r in roots if r.grad_fn is not None]
    for r in roots:
        if r.grad_fn is None and r.requires_grad and id(r) not in skip:
            skip.add(id(r))
            found.append(r)
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        var = getattr(node, "variable", None)
        if var is not None:  # an AccumulateGrad node: a leaf
            if id(var) not in skip:
                skip.add(id(var))
                found.append(var)
            continue
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return found


# --------------------------------------------------------------------------- the base class


class Weighting(nn.Module, abc.ABC):
    """Base class: combine K task losses into gradients on shared and task-specific parameters.

    Subclasses implement :meth:`_backward` on a validated :class:`TaskBatch`; see the module
    docstring for the contract of :meth:`backward`. Register a subclass with
    :func:`tlroutes.objectives.mtl.registry.register_weighting`, which also sets :attr:`name`.

    Args:
        num_tasks: K, the number of tasks (an integer >= 1).
    """

    #: the registry name, set by :func:`~tlroutes.objectives.mtl.registry.register_weighting`
    name: str = ""

    def __init__(self, *, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = positive_int("num_tasks", num_tasks)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"

    # -- the public method -----------------------------------------------------------------

    def backward(
        self,
        losses: LossesLike,
        shared_params: Iterable[Tensor] | nn.Module = (),
        shared_features: Tensor | None = None,
        task_params: Iterable[Tensor] | nn.Module | None = None,
        *,
        mask: Tensor | Sequence[bool] | None = None,
    ) -> dict:
        """Accumulate the weighted gradients of ``losses`` into ``.grad``; return logs.

        Args:
            losses: K task losses, a ``(K,)`` tensor or a sequence of scalar tensors (``None`` or
                a NaN loss marks a task without data in this batch).
            shared_params: the shared parameters (or a module holding them); those that do not
                require grad are ignored. Default: none.
            shared_features: the shared representation the heads read, for MGDA-UB and the
                ``on="features"`` variants. Default None.
            task_params: the other trained parameters; None (default) finds them in the graph.
            mask: ``(K,)`` booleans, False for a task to skip. Default None (all tasks).

        Returns:
            A dict with ``weights`` (CPU ``(K,)``), ``active`` (CPU bool ``(K,)``) and
            method-specific logs.
        """
        batch = self._prepare(losses, shared_params, shared_features, task_params, mask)
        if not batch.index:
            return {"weights": torch.zeros(self.num_tasks), "active": batch.active}
        logs = self._backward(batch)
        logs.setdefault("active", batch.active)
        return logs

    @abc.abstractmethod
    def _backward(self, batch: TaskBatch) -> dict:
        """Accumulate the method's gradients for the active tasks; return the logs."""

    # -- validation ------------------------------------------------------------------------

    def _prepare(self, losses, shared_params, shared_features, task_params, mask) -> TaskBatch:
        K = self.num_tasks
        if isinstance(losses, Tensor):
            if losses.dim() != 1 or losses.numel() != K:
                raise DataError(
                    f"{type(self).__name__} was built for {K} tasks; losses must be a tensor of "
                    f"shape ({K},) or a sequence of {K} scalar losses, got a tensor of shape "
                    f"{tuple(losses.shape)}."
                )
            entries: list = list(losses.unbind(0))
        elif isinstance(losses, Sequence) and not isinstance(losses, str):
            if len(losses) != K:
                raise DataError(
                    f"{type(self).__name__} was built for {K} tasks but got {len(losses)} losses; "
                    "pass None (or set mask[k]=False) for a task without data in this batch."
                )
            entries = list(losses)
        else:
            raise DataError(
                f"losses must be a ({K},) tensor or a sequence of {K} scalar tensors, got "
                f"{type(losses).__name__}."
            )
        if mask is None:
            keep = [True] * K
        else:
            keep = [bool(m) for m in (mask.tolist() if isinstance(mask, Tensor) else mask)]
            if len(keep) != K:
                raise DataError(f"mask must have {K} entries (one per task), got {len(keep)}.")
        present: list[int] = []
        for k, loss in enumerate(entries):
            if loss is None or not keep[k]:
                continue
            if isinstance(loss, float) and math.isnan(loss):
                continue
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise DataError(
                    f"loss {k} must be a scalar tensor (reduce it with .mean()), got {shape}."
                )
            present.append(k)
        if present:  # one device sync for the NaN test
            nan = torch.stack([entries[k].detach().reshape(()) for k in present]).isnan().tolist()
            present = [k for k, bad in zip(present, nan, strict=True) if not bad]
        if shared_features is not None and not isinstance(shared_features, Tensor):
            raise DataError(
                f"shared_features must be a tensor, got {type(shared_features).__name__}."
            )
        shared = _as_params(shared_params, "shared_params")
        tparams = None if task_params is None else _as_params(task_params, "task_params")
        if tparams is not None:
            ids = {id(p) for p in shared}
            tparams = [p for p in tparams if id(p) not in ids]
        return TaskBatch(
            losses=[entries[k] for k in present], index=present, num_tasks=K, shared=shared,
            features=shared_features, task_params=tparams,
        )

    # -- shared pieces for subclasses ------------------------------------------------------

    def _backward_weighted(
        self, batch: TaskBatch, weights: Tensor, extra: Tensor | None = None
    ) -> None:
        """One ordinary backward of ``Σ w_k L_k (+ extra)`` into every parameter."""
        total = weighted_sum(batch.losses, weights)
        if extra is not None:
            total = total + extra.to(total)
        if total.requires_grad:
            total.backward()

    def _backward_task_params(
        self, batch: TaskBatch, weights: Tensor, stop_at: Tensor | None = None
    ) -> None:
        """Backward of ``Σ w_k L_k`` restricted to the non-shared parameters (downstream of
        ``stop_at`` when given)."""
        params = batch.task_params
        if params is None:
            params = graph_leaves(batch.losses, exclude=batch.shared, stop_at=stop_at)
        total = weighted_sum(batch.losses, weights)
        if params and total.requires_grad:
            torch.autograd.backward(total, inputs=params)
