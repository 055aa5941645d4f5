"""Heads: one per task, from trunk features ``(B, in_dim)`` to the task's output.

Outputs are raw scores: logits for classification and multilabel, values for regression; the
matching losses and metrics are in :mod:`tlroutes.objectives.tasks`.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from tlroutes.errors import ConfigError
from tlroutes.problem import Task


def create_head(
    task: Task, in_dim: int, hidden: int | None = None, dropout: float = 0.0
) -> nn.Module:
    """A head for ``task`` reading features of width ``in_dim``.

    Args:
        task: the task; its ``num_outputs`` is the output width.
        in_dim: the trunk's ``out_dim``.
        hidden: width of one hidden ``Linear → ReLU`` layer before the output. Default ``None``
            (a single ``Linear(in_dim, task.num_outputs)``).
        dropout: dropout before the output layer. Default ``0.0``.

    Returns ``nn.Linear`` when ``hidden`` is ``None`` and ``dropout`` is 0, else an
    ``nn.Sequential`` whose last layer is named ``out``.
    """
    if in_dim < 1:
        raise ConfigError(f"Head for task '{task.name}' needs in_dim >= 1, got {in_dim}.")
    if hidden is None and not dropout:
        return nn.Linear(in_dim, task.num_outputs)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_dim
    if hidden is not None:
        layers["fc"] = nn.Linear(in_dim, hidden)
        layers["act"] = nn.ReLU()
        width = hidden
    if dropout:
        layers["drop"] = nn.Dropout(dropout)
    layers["out"] = nn.Linear(width, task.num_outputs)
    return nn.Sequential(layers)
