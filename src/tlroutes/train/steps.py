"""Training steps: modules whose ``forward(batch)`` returns the loss of one step.

The engine calls ``step(batch)`` with ``batch = {stream name: (x, y)}``. Keeping the whole loss
computation inside one module's forward means data-parallel wrappers see every parameter that
takes part, however many models and objectives a route combines.
"""

from __future__ import annotations

from torch import Tensor, nn

from tlroutes.objectives.tasks import task_loss
from tlroutes.problem import Task


class SupervisedStep(nn.Module):
    """The plain supervised step: ``task_loss(task, model(x, stem, head), y)`` on one stream.

    Args:
        model: a :class:`~tlroutes.model.TransferModel` (or any module taking
            ``(x, stem=..., head=...)``).
        task: the task the head predicts.
        stream: the stream the batch comes from. Default ``"train"``.
        stem, head: which stem and head to use; None (default) when the model has only one.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        stream: str = "train",
        stem: str | None = None,
        head: str | None = None,
    ) -> None:
        super().__init__()
        self.model, self.task = model, task
        self.stream, self.stem, self.head = stream, stem, head

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        x, y = batch[self.stream]
        return task_loss(self.task, self.model(x, self.stem, self.head), y)


class HeadStep(nn.Module):
    """Train a head alone on precomputed features: ``task_loss(task, head(f), y)``.

    Used while the trunk is frozen: its features are computed once (see
    :func:`tlroutes.train.features.cache_features`) instead of on every step.
    """

    def __init__(self, head: nn.Module, task: Task, stream: str = "train") -> None:
        super().__init__()
        self.head, self.task, self.stream = head, task, stream

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        f, y = batch[self.stream]
        return task_loss(self.task, self.head(f), y)
