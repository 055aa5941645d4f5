r"""Multi-task weighting: K task losses and the shared parameters in, gradients out.

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
  Only those that require grad count. The gradient-manipulating methods (PCGrad, MGDA, CAGrad,
  Nash-MTL) compute one gradient per task on them, combine, and *add* the result to ``.grad``.
- **task_params** — everything else that is trained (heads, and shared parameters you did not list)
  receives the ordinary gradient of ``Σ_k w_k L_k`` with the task weights ``w_k`` of the method.
  For the gradient methods this is a second, cheap backward restricted to those parameters; when
  ``task_params`` is None they are found by walking the autograd graph of the losses (give them
  explicitly to skip the walk).
- **shared_features** — the shared representation ``Z`` the heads read (a tensor in the graph, not
  detached). Read by MGDA (its MGDA-UB upper bound, used whenever ``Z`` is given), by
  ``on="features"`` in PCGrad, CAGrad, Nash-MTL and GradNorm; ignored by the others, so a loop
  may always pass it.
- **Gradients accumulate** into ``.grad`` as ``loss.backward()`` does: zero them yourself.
- **Returns** a dict of logs: always ``weights`` (a CPU tensor ``(K,)``, 0 for skipped tasks: the
  loss weights for the loss-based methods, the coefficients of the task gradients in the shared
  update for the gradient methods) and ``active`` (a CPU bool tensor ``(K,)``), plus
  method-specific entries.

Loss-based methods (:class:`EqualWeighting`, :class:`UncertaintyWeighting`,
:class:`DynamicWeightAverage`, :class:`RandomLossWeighting`, and :class:`GradNorm`, whose weights
come from gradient norms, read with K partial backward passes down to one shared layer) do
exactly **one** full backward, of the weighted sum. The gradient methods do
one backward per task through the shared part (``torch.autograd.grad`` on the shared parameters,
flattened into a ``(K, P)`` matrix), solve a ``K × K`` problem on the Gram matrix ``G Gᵀ`` and write
the combined gradient; see :mod:`tlroutes.objectives.mtl_gradients`.

Random draws (RLW's weights, PCGrad's task order) come from a :class:`torch.Generator` seeded
from ``(seed, step)``; the step counter is a buffer, so ``state_dict()`` resumes the sequence.

These methods are not aware of ``DistributedDataParallel``: under it, the loss-based methods work
as usual, the gradient methods combine each process's own gradients (all-reduce ``.grad``
yourself, inside ``no_sync()``).
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tlroutes.errors import ConfigError, DataError, did_you_mean

# GradNorm, PCGrad, MGDA, CAGrad and NashMTL live in mtl_gradients and are importable from here too.
__all__ = [
    "Weighting",
    "EqualWeighting",
    "UncertaintyWeighting",
    "DynamicWeightAverage",
    "RandomLossWeighting",
    "create_weighting",
    "available_weightings",
]

LossesLike = Tensor | Sequence[Tensor | float | None]


# --------------------------------------------------------------------------- helpers


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    ):
        raise ConfigError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")
    return value


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    return seed


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded from ``(seed, step)`` (well mixed, reproducible)."""
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator()
    gen.manual_seed((int(state[0]) << 31) ^ int(state[1]))
    return gen


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
        mask = torch.zeros(self.num_tasks, dtype=torch.bool)
        mask[self.index] = True
        return mask

    def full(self, values: Tensor | np.ndarray | Sequence[float]) -> Tensor:
        """Scatter per-active-task values into a CPU ``(K,)`` float tensor (0 for skipped)."""
        out = torch.zeros(self.num_tasks)
        out[self.index] = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(-1)
        return out

    def stacked(self) -> Tensor:
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


def task_gradients(losses: Sequence[Tensor], inputs: Sequence[Tensor]) -> tuple[Tensor, list[bool]]:
    """One gradient per loss w.r.t. ``inputs``, flattened: a ``(K, P)`` matrix.

    Returns the matrix and, per input, whether any loss reached it (unreached inputs keep their
    ``.grad`` untouched, as with ``loss.backward()``). The graph is retained.
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


# --------------------------------------------------------------------------- the base class


class Weighting(nn.Module, abc.ABC):
    """Base class: combine K task losses into gradients on shared and task-specific parameters.

    Subclasses implement :meth:`_backward` on a validated :class:`TaskBatch`; see the module
    docstring for the contract of :meth:`backward`.

    Args:
        num_tasks: K, the number of tasks (>= 1).
    """

    #: the factory name
    name: str = ""
    #: True when the method needs one backward pass per task through the shared parameters
    gradient_based: bool = False

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = _positive_int("num_tasks", num_tasks)

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
                require grad are ignored.
            shared_features: the shared representation the heads read, for MGDA-UB and
                GradNorm(on="features"). Default None.
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

    def _backward_weighted(self, batch: TaskBatch, weights: Tensor, extra: Tensor | None = None):
        """One ordinary backward of ``Σ w_k L_k (+ extra)`` into every parameter."""
        total = weighted_sum(batch.losses, weights)
        if extra is not None:
            total = total + extra
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


# --------------------------------------------------------------------------- loss-based methods


class EqualWeighting(Weighting):
    r"""Equal weighting (EW): the plain sum of the task losses, ``L = Σ_k L_k``.

    The baseline every other method is compared with (linear scalarisation with unit weights).
    One backward pass.

    Args:
        num_tasks: K.
    """

    name = "ew"

    def _backward(self, batch: TaskBatch) -> dict:
        w = torch.ones(len(batch.index))
        self._backward_weighted(batch, w)
        return {"weights": batch.full(w)}


class UncertaintyWeighting(Weighting):
    r"""Uncertainty weighting (UW): learned homoscedastic task uncertainty.

    Kendall, Gal & Cipolla, *Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics*, CVPR 2018. With a learned log-variance ``s_k = log σ_k²`` per task::

        L = Σ_k  a_k · exp(−s_k) · L_k  +  b_k · s_k

    The default ``a_k = b_k = 1`` is the form used in practice (and by most reimplementations):
    for a fixed loss the optimum is ``s_k = log L_k``, i.e. the weight ``exp(−s_k) = 1 / L_k``.
    The paper's own factors follow from a Gaussian likelihood for regression
    (``1/(2σ²) L + log σ``: ``a = b = ½``, same optimum ``exp(−s) = 1/L``) and a scaled softmax
    for classification (``1/σ² L + log σ``: ``a = 1, b = ½``, optimum ``exp(−s) = 1/(2L)``);
    choose them per task with ``kinds``. The ``s_k`` are parameters (``log_vars``): give
    ``weighting.parameters()`` to the optimiser. A skipped task's ``s_k`` gets no gradient.

    Args:
        num_tasks: K.
        kinds: None (default: ``a = b = 1`` for every task), or one of ``"regression"``,
            ``"classification"`` per task for the paper's factors.
        init_log_var: the initial ``s_k``. Default 0.0 (weights 1, i.e. equal weighting).
    """

    name = "uw"
    _FACTORS = {"regression": (0.5, 0.5), "classification": (1.0, 0.5)}

    def __init__(
        self, num_tasks: int, kinds: Sequence[str] | None = None, init_log_var: float = 0.0
    ) -> None:
        super().__init__(num_tasks)
        if not (isinstance(init_log_var, (int, float)) and math.isfinite(init_log_var)):
            raise ConfigError(f"init_log_var must be a finite number, got {init_log_var!r}.")
        if kinds is None:
            a, b = [1.0] * num_tasks, [1.0] * num_tasks
        else:
            kinds = list(kinds)
            if len(kinds) != num_tasks:
                raise ConfigError(f"kinds must name {num_tasks} tasks, got {len(kinds)}.")
            for kind in kinds:
                if kind not in self._FACTORS:
                    raise ConfigError(
                        f"Unknown task kind '{kind}' for uncertainty weighting; choose "
                        f"'regression' or 'classification'.{did_you_mean(kind, self._FACTORS)}"
                    )
            a = [self._FACTORS[k][0] for k in kinds]
            b = [self._FACTORS[k][1] for k in kinds]
        self.kinds = kinds
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init_log_var)))
        self.register_buffer("loss_factor", torch.tensor(a), persistent=False)
        self.register_buffer("reg_factor", torch.tensor(b), persistent=False)

    def _backward(self, batch: TaskBatch) -> dict:
        idx = torch.tensor(batch.index, device=self.log_vars.device)
        s = self.log_vars[idx]
        w = self.loss_factor[idx] * torch.exp(-s)
        losses = batch.stacked()
        total = (w.to(losses) * losses).sum() + (self.reg_factor[idx] * s).sum().to(losses)
        total.backward()
        return {
            "weights": batch.full(w.detach().cpu()),
            "log_vars": self.log_vars.detach().cpu().clone(),
        }


class DynamicWeightAverage(Weighting):
    r"""Dynamic Weight Average (DWA): weights from the rate at which each loss falls.

    Liu, Johns & Davison, *End-to-End Multi-Task Learning with Attention*, CVPR 2019::

        r_k = L_k(t−1) / L_k(t−2),     w_k(t) = K · exp(r_k / T) / Σ_j exp(r_j / T)

    A task whose loss falls slowly (large ratio) gets more weight. ``L_k(t)`` is the mean loss of
    epoch ``t`` (``per="epoch"``, the paper: call :meth:`end_epoch` after every epoch; until two
    epochs are recorded the weights are 1) or the loss of step ``t`` (``per="step"``: the last
    two calls, noisier but needs no epoch hook). A task with fewer than two recorded values, or
    a non-positive one, has ratio 1. With skipped tasks the softmax runs over the active tasks and
    their weights sum to their number. The history is kept in buffers (saved by
    ``state_dict()``).

    Args:
        num_tasks: K.
        temperature: T; a large T makes the weights uniform. Default 2.0 (the paper).
        per: ``"epoch"`` (default) or ``"step"``.
    """

    name = "dwa"

    def __init__(self, num_tasks: int, temperature: float = 2.0, per: str = "epoch") -> None:
        super().__init__(num_tasks)
        self.temperature = _positive("temperature", temperature)
        if per not in ("epoch", "step"):
            raise ConfigError(f"per must be 'epoch' or 'step', got {per!r}.")
        self.per = per
        self.register_buffer("history", torch.full((2, num_tasks), float("nan")))
        self.register_buffer("epoch_sum", torch.zeros(num_tasks))
        self.register_buffer("epoch_count", torch.zeros(num_tasks))

    def _push(self, values: Tensor, which: Tensor) -> None:
        """Append ``values`` to the history of the tasks in ``which`` (a bool mask)."""
        self.history[0] = torch.where(which, self.history[1], self.history[0])
        self.history[1] = torch.where(which, values, self.history[1])

    def ratios(self) -> Tensor:
        """``L_k(t−1) / L_k(t−2)`` per task (1 where not yet known)."""
        prev, last = self.history[0], self.history[1]
        ok = torch.isfinite(prev) & torch.isfinite(last) & (prev > 0)
        return torch.where(ok, last / prev.clamp_min(1e-30), torch.ones_like(last))

    def end_epoch(self) -> None:
        """Close an epoch: its mean loss per task becomes the newest history entry."""
        seen = self.epoch_count > 0
        if bool(seen.any()):
            self._push(self.epoch_sum / self.epoch_count.clamp_min(1), seen)
        self.epoch_sum.zero_()
        self.epoch_count.zero_()

    def _backward(self, batch: TaskBatch) -> dict:
        idx = torch.tensor(batch.index, device=self.history.device)
        r = self.ratios()[idx]
        w = len(batch.index) * torch.softmax(r / self.temperature, dim=0)
        values = batch.stacked().detach().to(self.history)
        which = torch.zeros(self.num_tasks, dtype=torch.bool, device=self.history.device)
        which[idx] = True
        if self.per == "step":
            full = torch.zeros_like(self.history[1])
            full[idx] = values
            self._push(full, which)
        else:
            self.epoch_sum.index_add_(0, idx, values)
            self.epoch_count.index_add_(0, idx, torch.ones_like(values))
        self._backward_weighted(batch, w.float())
        return {"weights": batch.full(w.cpu()), "ratios": batch.full(r.cpu())}


class RandomLossWeighting(Weighting):
    r"""Random Loss Weighting (RLW): fresh random weights every step.

    Lin, Ye, Xu, Shi & Zhang, *Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning*, TMLR 2022::

        ε ~ N(0, I_K),    w = softmax(ε),    L = Σ_k w_k L_k

    The weights sum to 1 (the paper's normalisation), so the gradient is on the scale of a mean,
    not a sum, of the losses. With skipped tasks the softmax runs over the active tasks only
    (ε is still drawn for all K, so the sequence does not depend on the masks). ε comes from a
    :class:`torch.Generator` seeded from ``(seed, step)``; the step counter is a buffer, so a
    resumed run continues the same sequence.

    Args:
        num_tasks: K.
        seed: the seed of the weight sequence. Default 0.
    """

    name = "rlw"

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__(num_tasks)
        self.seed = _check_seed(seed)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def _backward(self, batch: TaskBatch) -> dict:
        gen = step_generator(self.seed, int(self.num_steps))
        eps = torch.randn(self.num_tasks, generator=gen)
        self.num_steps.add_(1)
        w = torch.softmax(eps[batch.index], dim=0)
        self._backward_weighted(batch, w)
        return {"weights": batch.full(w)}


# --------------------------------------------------------------------------- the factory

_REGISTRY = {
    "ew": "EqualWeighting",
    "uw": "UncertaintyWeighting",
    "dwa": "DynamicWeightAverage",
    "gradnorm": "GradNorm",
    "pcgrad": "PCGrad",
    "mgda": "MGDA",
    "cagrad": "CAGrad",
    "nash_mtl": "NashMTL",
    "rlw": "RandomLossWeighting",
}
_GRADIENT_CLASSES = {"GradNorm", "PCGrad", "MGDA", "CAGrad", "NashMTL"}


def __getattr__(name: str):  # lazy re-export of the classes in mtl_gradients (no import cycle)
    if name in _GRADIENT_CLASSES:
        from tlroutes.objectives import mtl_gradients

        return getattr(mtl_gradients, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available_weightings() -> list[str]:
    """The names :func:`create_weighting` accepts."""
    return list(_REGISTRY)


def _weighting_class(name: str) -> type[Weighting]:
    cls_name = _REGISTRY[name]
    if cls_name in _GRADIENT_CLASSES:
        from tlroutes.objectives import mtl_gradients

        return getattr(mtl_gradients, cls_name)
    return globals()[cls_name]


def create_weighting(name: str, num_tasks: int, **kwargs) -> Weighting:
    """Build a multi-task weighting by name.

    Args:
        name: one of ``ew, uw, dwa, gradnorm, pcgrad, mgda, cagrad, nash_mtl, rlw``
            (case-insensitive; ``-`` may stand for ``_``).
        num_tasks: K, the number of tasks.
        **kwargs: the method's own arguments (see its class docstring).

    Raises:
        ConfigError: for an unknown name or an argument the method does not take.
    """
    if not isinstance(name, str):
        raise ConfigError(f"The weighting name must be a string, got {type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ConfigError(
            f"Unknown multi-task weighting '{name}'. Choose one of: "
            f"{', '.join(_REGISTRY)}.{did_you_mean(key, _REGISTRY)}"
        )
    cls = _weighting_class(key)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self",)]
    for arg in kwargs:
        if arg not in accepted or arg == "num_tasks":
            raise ConfigError(
                f"The '{key}' weighting ({cls.__name__}) takes no argument '{arg}'. Its arguments: "
                f"{', '.join(a for a in accepted if a != 'num_tasks') or 'none'}."
                f"{did_you_mean(arg, accepted)}"
            )
    return cls(num_tasks, **kwargs)
