"""Task losses and metrics: what a head's output is scored with.

Conventions (see :mod:`tlroutes.problem`): a head returns logits ``(B, K)`` for classification
and multilabel tasks and values ``(B, K)`` for regression. Targets are long class indices ``(B,)``
(classification), 0/1 floats ``(B, K)`` (multilabel) or floats ``(B, K)`` (regression).

======================  ==========================  ==========================================
task kind               loss (mean-reduced)         metrics (primary first)
======================  ==========================  ==========================================
``classification``      cross-entropy               ``accuracy``
``multilabel``          BCE with logits             ``f1`` (micro), ``subset_accuracy``
``regression``          mean squared error          ``mse``, ``mae``, ``r2``
======================  ==========================  ==========================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tlroutes.errors import DataError
from tlroutes.problem import Task

_PRIMARY: dict[str, tuple[str, bool]] = {
    "classification": ("accuracy", True),
    "multilabel": ("f1", True),
    "regression": ("mse", False),
}


def _check_same_shape(task: Task, output: Tensor, target: Tensor) -> None:
    if output.shape != target.shape:
        raise DataError(
            f"Task '{task.name}' ({task.kind}): output has shape {tuple(output.shape)} but target "
            f"has shape {tuple(target.shape)}; targets must be (B, {task.num_outputs})."
        )


def task_loss(task: Task, output: Tensor, target: Tensor) -> Tensor:
    """The mean loss of ``output`` against ``target`` for ``task`` (see the module table)."""
    if task.kind == "classification":
        return F.cross_entropy(output, target)
    _check_same_shape(task, output, target)
    if task.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))
    return F.mse_loss(output, target.to(output.dtype))


@torch.no_grad()
def task_metrics(task: Task, output: Tensor, target: Tensor) -> dict[str, float]:
    """Metrics of ``output`` against ``target``, primary metric first (see the module table).

    - ``accuracy``: share of samples whose arg-max logit is the target class.
    - ``f1``: micro-averaged F1 over all (sample, label) pairs with logit > 0 as "on";
      1.0 when there is no positive in prediction or target.
    - ``subset_accuracy``: share of samples whose whole label vector is right.
    - ``mse``, ``mae``: mean squared / absolute error over all outputs.
    - ``r2``: coefficient of determination per output, averaged over outputs; an output with a
      constant target scores 1.0 when predicted exactly, else 0.0 (as scikit-learn does).
    """
    output = output.detach()
    target = target.detach()
    if task.kind == "classification":
        return {"accuracy": (output.argmax(-1) == target).float().mean().item()}
    _check_same_shape(task, output, target)
    if task.kind == "multilabel":
        pred = output > 0
        true = target > 0.5
        tp = (pred & true).sum().item()
        wrong = (pred ^ true).sum().item()
        f1 = 1.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)
        subset = (pred == true).all(-1).float().mean().item()
        return {"f1": float(f1), "subset_accuracy": subset}
    output = output.double()
    target = target.double()
    err = output - target
    ss_res = (err**2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    r2 = torch.where(
        ss_tot > 0,
        1 - ss_res / ss_tot.clamp_min(1e-300),
        (ss_res == 0).double(),
    )
    return {
        "mse": (err**2).mean().item(),
        "mae": err.abs().mean().item(),
        "r2": r2.mean().item(),
    }


def primary_metric(task: Task) -> tuple[str, bool]:
    """``(name, higher_is_better)`` of the metric that selects models for ``task``:
    ``("accuracy", True)``, ``("f1", True)`` or ``("mse", False)``."""
    return _PRIMARY[task.kind]
