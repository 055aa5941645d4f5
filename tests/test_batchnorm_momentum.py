"""The BatchNorm caveat of ported EfficientNet-Lite weights (benchmarks/RESULTS.md): TensorFlow's
momentum 0.01 left eval-mode statistics at ImageNet's after a short fine-tuning; the trunk now
uses PyTorch's 0.1 unless told otherwise."""

import pytest
import torch
from torch import nn

from tlroutes.errors import ConfigError

pytest.importorskip("efficientnet_lite_pytorch")
pytestmark = pytest.mark.usefixtures("one_thread")


def _norms(trunk):
    return [m for m in trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_momentum_is_pytorchs_unless_kept():
    from tlroutes.backbones.pretrained import efficientnet_lite0

    assert {m.momentum for m in _norms(efficientnet_lite0())} == {0.1}
    kept = {m.momentum for m in _norms(efficientnet_lite0(bn_momentum=None))}
    assert len(kept) == 1 and kept.pop() == pytest.approx(0.01)  # 1 - TF's 0.99
    with pytest.raises(ConfigError, match="bn_momentum"):
        efficientnet_lite0(bn_momentum=0.0)


def test_running_statistics_follow_the_target_within_tens_of_steps():
    """After 40 training-mode batches of shifted inputs, the stem BatchNorm's running mean is
    within 5 % of the batch mean with momentum 0.1 (1 - 0.9⁴⁰ = 98.5 % of the way), while the
    ported 0.01 has moved 33 % of the way from ImageNet's statistics."""
    from tlroutes.backbones.pretrained import efficientnet_lite0

    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32) * 0.5 + 1.0  # far from ImageNet-normalised inputs
    moved = {}
    for momentum in (0.1, None):
        trunk = efficientnet_lite0(bn_momentum=momentum).train()
        bn = trunk.net._bn0
        start = bn.running_mean.clone()
        with torch.no_grad():
            for _ in range(40):
                trunk(x)
            target = bn.running_mean.clone()
            bn.reset_running_stats()
            bn.momentum = 1.0
            trunk(x)  # one batch at momentum 1: the batch's own mean
            batch_mean = bn.running_mean.clone()
        moved[momentum] = ((target - start).norm() / (batch_mean - start).norm()).item()
    assert moved[0.1] == pytest.approx(1 - 0.9 ** 40, abs=0.05)
    assert moved[None] == pytest.approx(1 - 0.99 ** 40, abs=0.05)
