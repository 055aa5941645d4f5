"""Trunk factories that tests name as ``module:tests.plugins.factories:<name>``."""

from torch import nn


def small_cnn(width: int = 8) -> nn.Module:
    """A plain module with no trunk attributes: its widths are found by wrapping."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())


def not_a_module() -> dict:
    return {"conv": 3}
