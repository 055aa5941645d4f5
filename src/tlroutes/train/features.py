"""Frozen-trunk features computed once and reused while the trunk stays frozen."""

from __future__ import annotations

from torch import nn

from tlroutes.problem import Split
from tlroutes.train.engine import evaluate_split


def cache_features(
    model: nn.Module, split: Split, stem: str | None = None, batch_size: int = 1024
) -> Split:
    """The trunk features of every sample of ``split`` (in eval mode, without gradients).

    Args:
        model: a :class:`~tlroutes.model.TransferModel` whose stem and trunk are frozen.
        split: the inputs and targets.
        stem: the stem to read inputs with; None when the model has one.
        batch_size: samples per forward pass. Default 1024.

    Returns:
        A :class:`Split` of features ``(N, trunk.out_dim)`` and the same targets, on the
        model's device.
    """
    features = evaluate_split(model, lambda x: model.features(x, stem), split.x, batch_size)
    return Split(features, split.y.to(features.device))
