"""Image transforms per split, from a run file's ``transforms:`` block (torchvision transforms v2).

Every image goes through the same evaluation transform: convert to the domain's colour mode,
resize (``crop``: the shorter side to ``size / crop_pct``, then the centre cut; ``stretch``:
exactly ``size``), scale to [0, 1] float32 and, when statistics are known, normalise. Training
batches go through the training transform: the named augmentations in the order given, each at
the output size, then the same scaling and normalisation. ``random_resized_crop`` replaces the
evaluation resize (it makes the output size itself); ``random_erasing`` acts on the normalised
tensor, as in timm; the others act on the ``uint8`` image.

Defaults come from the trunk's :class:`~tlroutes.backbones.inputs.InputConfig` (size, mean,
std, interpolation, channels), so a pretrained trunk sees images as it was trained on them.

Randomness: every augmentation draws from the global torch RNG, which
:meth:`tlroutes.lazy_inputs.LazyInputs.load` seeds per ``(augment_seed, position in the batch)``;
the augmented batch at step *i* is therefore a function of (seed, *i*) alone, in the main process
or a data-loader worker, and a resumed run reads the same batches.

Example::

    transforms:
      size: 224
      train: [random_resized_crop: {scale: [0.5, 1.0]}, horizontal_flip,
              color_jitter: {brightness: 0.2, contrast: 0.2}]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tlroutes.backbones.inputs import InputConfig, as_size, trunk_input_config
from tlroutes.backbones.registry import check_kwargs
from tlroutes.config import MAX_CANVAS, TransformSpec
from tlroutes.errors import ConfigError, MissingExtraError, did_you_mean, shorten

#: Colour modes an image domain can have, with their channel counts.
MODE_CHANNELS: dict[str, int] = {"RGB": 3, "L": 1}


def _v2() -> Any:
    try:
        from torchvision.transforms import v2
    except ImportError as exc:  # torchvision is in the 'data' and 'vision' extras
        raise MissingExtraError("Image transforms need torchvision: pip install "
                                "'tlroutes[data]'.") from exc
    return v2


# -- the named augmentations ------------------------------------------------------------------
# Each builder takes the output size and interpolation first, then its own keyword parameters,
# which a run file sets by name (checked by name, type and bounds before the call).

def random_resized_crop(size: tuple[int, int], interpolation: str,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Any:
    """A random area share ``scale`` and aspect ``ratio`` of the image, resized to the output
    size (Szegedy et al. 2015). Replaces the evaluation resize. Defaults (0.08, 1.0), (3/4, 4/3)."""
    _check_range("random_resized_crop.scale", scale, 0.0, 1.0)
    _check_range("random_resized_crop.ratio", ratio, 1e-3, 1e3)
    return _v2().RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio),
                                   interpolation=_interp(interpolation), antialias=True)


def random_crop(size: tuple[int, int], interpolation: str, padding: int = 4,
                padding_mode: str = "constant") -> Any:
    """Pad ``padding`` pixels on every side (``padding_mode``: constant, edge, reflect,
    symmetric), then cut a random output-size window. Defaults 4, 'constant'."""
    modes = ("constant", "edge", "reflect", "symmetric")
    if padding_mode not in modes:
        raise ConfigError(f"random_crop.padding_mode must be one of {', '.join(modes)}, got "
                          f"{shorten(padding_mode, quote=True)}.")
    if padding < 0:
        raise ConfigError(f"random_crop.padding must be at least 0, got {padding}.")
    return _v2().RandomCrop(size, padding=padding, padding_mode=padding_mode,
                            pad_if_needed=True)


def horizontal_flip(size: tuple[int, int], interpolation: str, p: float = 0.5) -> Any:
    """Mirror left-right with probability ``p``. Default 0.5."""
    return _v2().RandomHorizontalFlip(_probability("horizontal_flip.p", p))


def vertical_flip(size: tuple[int, int], interpolation: str, p: float = 0.5) -> Any:
    """Mirror top-bottom with probability ``p``. Default 0.5."""
    return _v2().RandomVerticalFlip(_probability("vertical_flip.p", p))


def rotation(size: tuple[int, int], interpolation: str, degrees: float = 15.0) -> Any:
    """Rotate by an angle drawn uniformly from [-degrees, degrees] (corners filled with 0).
    Default 15."""
    if not 0 <= degrees <= 180:
        raise ConfigError(f"rotation.degrees must be in [0, 180], got {degrees}.")
    return _v2().RandomRotation(float(degrees), interpolation=_interp(interpolation))


def color_jitter(size: tuple[int, int], interpolation: str, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0) -> Any:
    """Random brightness, contrast and saturation factors in [1-v, 1+v] and a hue shift in
    [-hue, hue] (hue at most 0.5). Defaults 0 (unchanged)."""
    for name, value, top in (("brightness", brightness, 1e3), ("contrast", contrast, 1e3),
                             ("saturation", saturation, 1e3), ("hue", hue, 0.5)):
        if not 0 <= value <= top:
            raise ConfigError(f"color_jitter.{name} must be in [0, {top:g}], got {value}.")
    return _v2().ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation,
                             hue=hue)


def gaussian_blur(size: tuple[int, int], interpolation: str, kernel_size: int = 3,
                  sigma: tuple[float, float] = (0.1, 2.0)) -> Any:
    """Blur with an odd ``kernel_size`` and a sigma drawn from ``sigma``. Defaults 3,
    (0.1, 2.0)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"gaussian_blur.kernel_size must be odd and positive, got "
                          f"{kernel_size}.")
    _check_range("gaussian_blur.sigma", sigma, 1e-6, 1e3)
    return _v2().GaussianBlur(kernel_size, sigma=tuple(sigma))


def trivial_augment(size: tuple[int, int], interpolation: str) -> Any:
    """TrivialAugment (Müller & Hutter 2021): one random operation at a random strength."""
    return _v2().TrivialAugmentWide(interpolation=_interp(interpolation))


def rand_augment(size: tuple[int, int], interpolation: str, num_ops: int = 2,
                 magnitude: int = 9) -> Any:
    """RandAugment (Cubuk et al. 2020): ``num_ops`` random operations at ``magnitude`` (0-30).
    Defaults 2, 9."""
    if not 1 <= num_ops <= 16 or not 0 <= magnitude <= 30:
        raise ConfigError(f"rand_augment needs num_ops in [1, 16] and magnitude in [0, 30], "
                          f"got {num_ops}, {magnitude}.")
    return _v2().RandAugment(num_ops=num_ops, magnitude=magnitude,
                             interpolation=_interp(interpolation))


def random_erasing(size: tuple[int, int], interpolation: str, p: float = 0.5,
                   scale: tuple[float, float] = (0.02, 0.33)) -> Any:
    """With probability ``p``, set a random rectangle of area share ``scale`` to 0 (Zhong et al.
    2020), on the normalised tensor. Defaults 0.5, (0.02, 0.33)."""
    _check_range("random_erasing.scale", scale, 0.0, 1.0)
    return _v2().RandomErasing(p=_probability("random_erasing.p", p), scale=tuple(scale))


#: The augmentations a run file names in ``transforms.train``.
AUGMENTATIONS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (random_resized_crop, random_crop, horizontal_flip, vertical_flip,
                            rotation, color_jitter, gaussian_blur, trivial_augment,
                            rand_augment, random_erasing)
}
#: Augmentations that make the output size themselves (no evaluation resize before them).
SIZING = frozenset({"random_resized_crop"})
#: Augmentations on the normalised float tensor rather than the uint8 image.
ON_TENSOR = frozenset({"random_erasing"})


def _probability(where: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{where} must be a probability in [0, 1], got {p}.")
    return float(p)


def _check_range(where: str, pair: Sequence[float], low: float, high: float) -> None:
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ConfigError(f"{where} must be [min, max] with {low:g} <= min <= max <= {high:g}, "
                          f"got {shorten(list(pair))}.")


def _interp(name: str) -> Any:
    return _v2().InterpolationMode(name)


def parse_augmentation(entry: str | dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """``(name, parameters)`` of one ``transforms.train`` entry: a name or ``{name: {...}}``."""
    if isinstance(entry, str):
        name, params = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        name, params = next(iter(entry.items()))
        params = {} if params is None else params
    else:
        raise ConfigError(f"{where}: each augmentation is a name or {{name: {{parameter: "
                          f"value}}}}, got {shorten(entry, quote=True)}.")
    if name not in AUGMENTATIONS:
        raise ConfigError(f"{where}: unknown augmentation {shorten(name, quote=True)}."
                          f"{did_you_mean(name, AUGMENTATIONS)} Known: "
                          f"{', '.join(AUGMENTATIONS)}.")
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: the parameters of {name} are a mapping "
                          f"{{parameter: value}}, got {shorten(params, quote=True)}.")
    return name, dict(params)


def build_augmentation(entry: str | dict[str, Any], size: tuple[int, int], interpolation: str,
                       where: str = "transforms.train") -> tuple[str, Any]:
    """``(name, transform)`` for one ``transforms.train`` entry at output ``size``.

    Raises:
        ConfigError: an unknown name (with the near miss), an unknown parameter, or a value of
            the wrong type or out of range.
    """
    name, params = parse_augmentation(entry, where)
    builder = AUGMENTATIONS[name]
    check_kwargs(builder, params, f"{where}: augmentation '{name}'", skip=2)
    try:
        return name, builder(size, interpolation, **params)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:  # torchvision's own refusal of a value
        raise ConfigError(f"{where}: augmentation '{name}' cannot be made with "
                          f"{shorten(params)}: {shorten(str(exc), 200)}") from exc


# -- the pipeline -----------------------------------------------------------------------------
class ConvertMode:
    """A PIL image in colour mode ``mode`` (``"RGB"`` or ``"L"``); already in it: unchanged."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Any) -> Any:
        if image.mode == self.mode:
            return image
        if self.mode == "RGB" and image.mode in ("RGBA", "LA", "P", "PA"):
            # Transparent pixels become black, not whatever colour their hidden RGB holds.
            image = image.convert("RGBA")
            from PIL import Image

            flat = Image.new("RGBA", image.size, (0, 0, 0, 255))
            flat.alpha_composite(image)
            image = flat
        return image.convert(self.mode)


class CoverResize:
    """Resize so the image covers ``size`` (the aspect kept), then cut the centre ``size``.

    With ``crop_pct`` < 1 the image first covers ``size / crop_pct`` (a margin, as timm's
    evaluation transform), so the cut keeps that share of it.
    """

    def __init__(self, size: tuple[int, int], interpolation: str, crop_pct: float = 1.0
                 ) -> None:
        self.size, self.interpolation, self.crop_pct = size, interpolation, crop_pct

    def __call__(self, image: Tensor) -> Tensor:
        v2 = _v2()
        th, tw = self.size
        ch, cw = math.floor(th / self.crop_pct), math.floor(tw / self.crop_pct)
        h, w = image.shape[-2:]
        if (h, w) != (th, tw):
            scale = max(ch / h, cw / w)
            new = (max(ch, round(h * scale)), max(cw, round(w * scale)))
            if new != (h, w):
                image = v2.functional.resize(image, list(new), interpolation=_interp(
                    self.interpolation), antialias=True)
            image = v2.functional.center_crop(image, [th, tw])
        return image


@dataclass
class ImageTransforms:
    """The evaluation and training transforms of one image problem.

    Args:
        size: output ``(height, width)``.
        mode: colour mode, ``"RGB"`` or ``"L"``; sets the channel count.
        normalization: ``(mean, std)`` per channel applied after scaling to [0, 1]; None: the
            values stay in [0, 1].
        interpolation: resize interpolation.
        resize: ``"crop"`` or ``"stretch"`` (see :class:`~tlroutes.config.TransformSpec`).
        crop_pct: with ``"crop"``, the share of the resized image kept.
        augmentations: ``transforms.train`` entries, as in a run file.
    """

    size: tuple[int, int]
    mode: str = "RGB"
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    interpolation: str = "bilinear"
    resize: str = "crop"
    crop_pct: float = 1.0
    augmentations: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        v2 = _v2()
        channels = MODE_CHANNELS[self.mode]
        resize = (CoverResize(self.size, self.interpolation, self.crop_pct)
                  if self.resize == "crop" else
                  v2.Resize(list(self.size), interpolation=_interp(self.interpolation),
                            antialias=True))
        head = [ConvertMode(self.mode), v2.ToImage()]
        tail: list[Any] = [v2.ToDtype(torch.float32, scale=True)]
        if self.normalization is not None:
            mean, std = self.normalization
            tail.append(v2.Normalize(list(mean), list(std)))
        self._eval = v2.Compose([*head, resize, *tail])
        built = [build_augmentation(e, self.size, self.interpolation, f"transforms.train[{i}]")
                 for i, e in enumerate(self.augmentations)]
        sized = any(name in SIZING for name, _ in built)
        on_image = [t for name, t in built if name not in ON_TENSOR]
        on_tensor = [t for name, t in built if name in ON_TENSOR]
        self._train = v2.Compose([*head, *([] if sized else [resize]), *on_image, *tail,
                                  *on_tensor])
        self.sample_shape = (channels, *self.size)

    def eval_transform(self, raw: Any) -> Tensor:
        """A PIL image → float32 ``(C, H, W)``, deterministic."""
        return self._eval(raw)

    def train_transform(self, raw: Any) -> Tensor:
        """A PIL image → float32 ``(C, H, W)``, augmented with the global torch RNG."""
        out = self._train(raw)
        if tuple(out.shape) != self.sample_shape:  # a guard: every sample of a batch must stack
            raise ConfigError(f"transforms.train made a sample of shape {tuple(out.shape)}, not "
                              f"{self.sample_shape}; put a resizing augmentation last.")
        return out

    @property
    def augmented(self) -> bool:
        """Whether training batches are augmented."""
        return bool(self.augmentations)


def resolve_transforms(
    spec: TransformSpec,
    *,
    trunk: str | None = None,
    data_size: tuple[int, int],
    data_mode: str,
    where: str = "transforms",
) -> ImageTransforms:
    """The transforms ``spec`` asks for, its gaps filled from the trunk and the data.

    Args:
        spec: the run file's ``transforms:`` block.
        trunk: the run's trunk name; its :class:`InputConfig` gives the default size, mean, std,
            interpolation and channels. None: no trunk defaults.
        data_size: the most common ``(height, width)`` of the images (the size when neither
            ``spec`` nor the trunk gives one).
        data_mode: the colour mode most images have (``"RGB"`` or ``"L"``).
        where: names the block in errors.
    """
    config = trunk_input_config(trunk) or InputConfig()
    size = (as_size(spec.size, f"{where}.size") if spec.size is not None
            else config.size or tuple(data_size))
    if max(size) > MAX_CANVAS:
        raise ConfigError(f"{where}.size {list(size)} is larger than {MAX_CANVAS} pixels a side; "
                          "give a smaller size.")
    if spec.mode != "auto":
        mode = spec.mode
    elif config.channels in (1, 3):
        mode = "RGB" if config.channels == 3 else "L"
    else:
        mode = data_mode
    channels = MODE_CHANNELS[mode]
    if spec.mean is not None or spec.std is not None:
        if spec.mean is None or spec.std is None:
            raise ConfigError(f"{where}: give both mean and std, or neither.")
        stats = (tuple(spec.mean), tuple(spec.std))
    else:
        stats = config.statistics()
    if stats is not None:
        mean, std = (tuple(float(v) for v in s) * (channels if len(s) == 1 else 1)
                     for s in stats)
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(f"{where}: mean and std need {channels} value(s) for {mode} images "
                              f"(or one, for every channel), got {len(mean)} and {len(std)}.")
        if any(s <= 0 for s in std):
            raise ConfigError(f"{where}.std must be positive, got {list(std)}.")
        stats = (mean, std)
    return ImageTransforms(size=size, mode=mode, normalization=stats,
                           interpolation=spec.interpolation or config.interpolation,
                           resize=spec.resize, crop_pct=spec.crop_pct,
                           augmentations=list(spec.train))
