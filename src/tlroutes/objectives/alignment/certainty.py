"""Prediction certainty, shared by CDAN+E and MCC: entropy and the weights ``1 + exp(-H)``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["prediction_entropy", "entropy_weights"]


def prediction_entropy(probs: Tensor) -> Tensor:
    """Shannon entropy (nats) of each row of ``probs`` ``(B, K)``, with 0·log 0 = 0 → ``(B,)``."""
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def entropy_weights(probs: Tensor) -> Tensor:
    """CDAN+E's certainty weights ``w = 1 + exp(-H(p))`` per row of ``probs`` (B, K), unnormalised.

    ``H`` is the Shannon entropy in nats, so ``w`` runs from ``1 + 1/K`` (uniform prediction) to
    2 (one-hot prediction). MCC uses the same weights (Jin et al., ECCV 2020).
    """
    return 1.0 + torch.exp(-prediction_entropy(probs))
