"""What input a trunk expects: its image size, mean, std and interpolation (one small structure).

A trunk builder (class or factory) may declare ``input_config = InputConfig(...)``; image
transforms (:mod:`tlroutes.data.transforms`) take their defaults from it, so a pretrained trunk
sees images the way it was trained on them. A trunk that declares nothing leaves the images at
their own size, unnormalised. Trunks made from timm models can fill the structure from timm's
``resolve_data_config`` (``input_size``, ``mean``, ``std``, ``interpolation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tlroutes.backbones.registry import TRUNKS
from tlroutes.errors import ConfigError

#: Per-channel RGB mean and standard deviation of ImageNet, for inputs scaled to [0, 1]: the
#: statistics of a 3-channel pretrained trunk that declares none of its own.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Interpolations an image transform can resize with (torchvision's names).
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class InputConfig:
    """The input a trunk expects.

    Args:
        size: ``(height, width)`` in pixels; None: any size (the data's own).
        mean, std: per-channel statistics of inputs scaled to [0, 1]; None: no normalisation
            declared (then a ``pretrained`` 3-channel trunk gets ImageNet's, see
            :meth:`statistics`).
        interpolation: how images are resized, one of :data:`INTERPOLATIONS`. Default
            ``"bilinear"``.
        channels: the channels the trunk reads (3 for RGB); None: any.
        pretrained: whether the trunk's weights were learned on images (its statistics then
            matter). Default False.
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    channels: int | None = None
    pretrained: bool = False

    def __post_init__(self) -> None:
        if self.size is not None:
            object.__setattr__(self, "size", as_size(self.size, "InputConfig.size"))
        if (self.mean is None) != (self.std is None):
            raise ConfigError("InputConfig needs both mean and std, or neither.")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"InputConfig.interpolation must be one of "
                              f"{', '.join(INTERPOLATIONS)}, got {self.interpolation!r}.")

    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)`` to normalise with: the declared ones; else ImageNet's for a pretrained
        3-channel trunk; else None (inputs stay in [0, 1])."""
        if self.mean is not None and self.std is not None:
            return tuple(self.mean), tuple(self.std)
        if self.pretrained and self.channels == 3:
            return IMAGENET_MEAN, IMAGENET_STD
        return None


def as_size(value: int | Sequence[int], where: str) -> tuple[int, int]:
    """``value`` (an int side or ``[h, w]``) as ``(h, w)`` of positive ints; else ConfigError."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                 for v in pair):
        raise ConfigError(f"{where} must be a positive int or [height, width], got {value!r}.")
    return int(pair[0]), int(pair[1])


def trunk_input_config(name: str | None) -> InputConfig | None:
    """The :class:`InputConfig` the trunk registered as ``name`` declares, without building it;
    None when ``name`` is None, unknown here (the model block reports that) or declares none."""
    if name is None:
        return None
    try:
        builder = TRUNKS.find(name)
    except ConfigError:  # a bad timm:/module: name: the model block reports it
        return None
    config = getattr(builder, "input_config", None)
    return config if isinstance(config, InputConfig) else None
