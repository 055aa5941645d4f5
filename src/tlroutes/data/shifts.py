"""Domain-shift generators: image transforms on tensors and the knobs of the MNIST-1D generator.

Image shifts are pure functions on ``(N, C, H, W)`` float batches, usable outside the loaders:
:func:`rotate`, :func:`rescale`, :func:`blur`, :func:`invert`, :func:`add_noise`. Pixel values
are taken to lie in ``[0, 1]`` with a background of 0 (what the built-in digits use): geometric
shifts fill uncovered pixels with 0, inversion maps ``x -> 1 - x`` and noise is clipped to
``[0, 1]``.

:func:`load_builtin <tlroutes.data.builtin.load_builtin>` takes a shift as a dict of knob ->
strength. Image knobs (:data:`IMAGE_SHIFTS`) are applied in this fixed order, whatever the dict's
order: ``scale`` and ``rotation`` (one combined resampling), then ``blur``, ``inversion``,
``noise``. Signal knobs (:data:`SIGNAL_SHIFTS`) set arguments of the MNIST-1D procedural
generator, so a signal shift regenerates the data rather than transforming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tlroutes.data.splits import seeded_generator
from tlroutes.errors import ConfigError, DataError, did_you_mean

IMAGE_SHIFTS: Mapping[str, str] = MappingProxyType(
    {
        "scale": "zoom factor about the image centre (>0; 1 = none, 0.7 shrinks, 1.5 enlarges)",
        "rotation": "angle in degrees, counter-clockwise as displayed (row 0 at the top); a number "
        "rotates every image by exactly that angle, a pair (lo, hi) by a uniform random angle "
        "per image (0 = none)",
        "blur": "Gaussian blur, standard deviation in pixels (>=0; 0 = none)",
        "inversion": "True (or 1) maps x -> 1 - x; False (or 0) = none",
        "noise": "additive Gaussian noise, standard deviation in pixel-value units, then clipped "
        "to [0, 1] (>=0; 0 = none)",
    }
)
"""Image shift knobs, in the order they are applied, with their units."""

SIGNAL_SHIFTS: Mapping[str, str] = MappingProxyType(
    {
        "noise": "noise level: sets the generator's corr_noise_scale = noise and "
        "iid_noise_scale = 0.08 * noise (generator default 0.25, i.e. 0.25 and 0.02; 0 = no noise)",
        "shear": "sets shear_scale: each signal gets a random linear ramp whose slope is "
        "uniform in +-shear/2 over the signal (generator default 0.75; 0 = none)",
        "translation": "sets max_translation: a random circular shift of 0..translation-1 "
        "samples of the 72-sample signal before it is resampled to 40 (integer 0..72; generator "
        "default 48; 0 or 1 = none)",
    }
)
"""Signal (MNIST-1D) shift knobs: each sets absolute arguments of ``mnist1d``'s generator."""

SIGNAL_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {"noise": 0.25, "shear": 0.75, "translation": 48}
)
"""The knob values that reproduce ``mnist1d.data.get_dataset_args()`` (no shift)."""

#: ``iid_noise_scale / corr_noise_scale`` in the generator's defaults (0.02 / 0.25).
IID_NOISE_RATIO = 0.08
#: Length of an MNIST-1D signal before it is resampled to 40 (template 12 + padding up to 60).
SIGNAL_RAW_LENGTH = 72

_IMAGE_IDENTITY: dict[str, Any] = {
    "scale": 1.0,
    "rotation": 0.0,
    "blur": 0.0,
    "inversion": False,
    "noise": 0.0,
}


# --------------------------------------------------------------------------------------------
# Image shifts: pure tensor functions
# --------------------------------------------------------------------------------------------


def _check_batch(x: Tensor, what: str) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise DataError(
            f"{what} expects a float image batch of shape (N, C, H, W), got dtype {x.dtype} and "
            f"shape {tuple(x.shape)}. Add a batch dimension with x[None] for a single image."
        )


def _affine(x: Tensor, degrees: float | Tensor = 0.0, factor: float = 1.0) -> Tensor:
    """Rotate by ``degrees`` (counter-clockwise as displayed) and zoom by ``factor`` about the
    centre, with bilinear resampling and zeros outside the image."""
    n, _, h, w = x.shape
    angle = torch.as_tensor(degrees, dtype=torch.float64).reshape(-1)
    if angle.numel() not in (1, n):
        raise DataError(
            f"rotation angles: got {angle.numel()} angles for a batch of {n}; give one angle or "
            "one per image."
        )
    angle = angle.expand(n)
    if bool((angle.remainder(360.0) == 0).all()) and factor == 1.0:
        return x.clone()
    rad = torch.deg2rad(angle)
    cos, sin = torch.cos(rad) / factor, torch.sin(rad) / factor
    # Output pixel p (centred pixel units, rows downward) samples the input at R(-angle) p / factor;
    # affine_grid works in [-1, 1] coordinates, hence the aspect-ratio factors h / w and w / h.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(x: Tensor, degrees: float | Tensor) -> Tensor:
    """Rotate each image about its centre.

    Args:
        x: float batch ``(N, C, H, W)``.
        degrees: angle in degrees, one number for all images or a tensor of ``N`` angles.
            Positive is counter-clockwise as displayed with row 0 at the top, so ``rotate(x, 90)``
            equals ``torch.rot90(x, 1, dims=(-2, -1))`` for square images.

    Returns:
        The rotated batch, same shape; bilinear resampling, pixels from outside filled with 0.
        A multiple of 360 degrees returns an exact copy.
    """
    _check_batch(x, "rotate()")
    return _affine(x, degrees, 1.0)


def rescale(x: Tensor, factor: float) -> Tensor:
    """Zoom each image about its centre, keeping its size.

    Args:
        x: float batch ``(N, C, H, W)``.
        factor: zoom factor (> 0). ``0.7`` shrinks the content to 70% (the border fills with 0),
            ``1.5`` enlarges it (the border is cropped), ``1.0`` returns an exact copy.
    """
    _check_batch(x, "rescale()")
    if not factor > 0:
        raise DataError(f"rescale(): factor must be > 0, got {factor}.")
    return _affine(x, 0.0, float(factor))


def blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (separable convolution).

    The kernel has radius ``max(1, ceil(3 * sigma))`` and sums to 1; borders are padded by
    replicating the edge pixels, so the mean is about preserved. ``sigma = 0`` returns a copy.
    """
    _check_batch(x, "blur()")
    if sigma < 0:
        raise DataError(f"blur(): sigma must be >= 0, got {sigma}.")
    if sigma == 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.device, x.dtype)
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)


def invert(x: Tensor) -> Tensor:
    """Invert intensities: ``1 - x`` (for images in ``[0, 1]``). Applying it twice is identity."""
    return 1.0 - x


def add_noise(
    x: Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """Add Gaussian noise of standard deviation ``sigma`` (pixel-value units), then clip.

    Args:
        x: float tensor of any shape.
        sigma: noise standard deviation (>= 0).
        generator: a CPU :class:`torch.Generator` for reproducible noise; default ``None`` uses
            torch's global generator.
        clip: ``(low, high)`` to clamp the result to, default ``(0.0, 1.0)``; ``None`` keeps it
            unclipped.
    """
    if sigma < 0:
        raise DataError(f"add_noise(): sigma must be >= 0, got {sigma}.")
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device)
    out = x + sigma * noise.to(x.device)
    return out.clamp(*clip) if clip is not None else out


# --------------------------------------------------------------------------------------------
# Shift dicts: validation, naming, application
# --------------------------------------------------------------------------------------------


def _number(knob: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"Shift knob '{knob}' needs a finite number, got {value!r}.")
    return float(value)


def _check_image_value(knob: str, value: Any) -> Any:
    if knob == "inversion":
        if value in (True, False, 0, 1):
            return bool(value)
        raise ConfigError(f"Shift knob 'inversion' is on or off: use True or False, got {value!r}.")
    if knob == "rotation" and isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(
                f"Shift knob 'rotation' takes an angle or a range (lo, hi) in degrees, "
                f"got {value!r}."
            )
        lo, hi = _number(knob, value[0]), _number(knob, value[1])
        if lo > hi:
            raise ConfigError(f"Shift knob 'rotation': range ({lo:g}, {hi:g}) has lo > hi.")
        return (lo, hi) if lo != hi else lo
    number = _number(knob, value)
    if knob == "scale" and number <= 0:
        raise ConfigError(f"Shift knob 'scale' is a zoom factor and must be > 0, got {number:g}.")
    if knob in ("blur", "noise") and number < 0:
        raise ConfigError(f"Shift knob '{knob}' is a standard deviation and must be >= 0.")
    return number


def _check_signal_value(knob: str, value: Any) -> float:
    number = _number(knob, value)
    if number < 0:
        raise ConfigError(f"Shift knob '{knob}' must be >= 0, got {number:g}.")
    if knob == "translation":
        if number != int(number) or number > SIGNAL_RAW_LENGTH:
            raise ConfigError(
                f"Shift knob 'translation' is a whole number of samples in 0..{SIGNAL_RAW_LENGTH} "
                f"(the signal's length before resampling), got {value!r}."
            )
        return int(number)
    return number


def check_shift(shift: Mapping[str, Any] | None, modality: str, dataset: str) -> dict[str, Any]:
    """Validate a shift dict and return it canonical: knobs in application order, values checked,
    and knobs without effect dropped (image: the identity value; signal: the generator default).

    Args:
        shift: knob -> strength, or ``None`` for no shift.
        modality: ``"image"`` (knobs :data:`IMAGE_SHIFTS`) or ``"signal"`` (:data:`SIGNAL_SHIFTS`).
        dataset: the dataset name, used in messages.

    Raises:
        ConfigError: for a shift that is not a dict, an unknown knob, a knob of the other modality
            (e.g. ``rotation`` for signals) or a bad value.
    """
    if shift is None:
        return {}
    if not isinstance(shift, Mapping):
        raise ConfigError(
            f"shift must be a dict of knob -> strength, e.g. {{'rotation': 30}}, got {shift!r}."
        )
    valid = IMAGE_SHIFTS if modality == "image" else SIGNAL_SHIFTS
    other, other_modality = (
        (SIGNAL_SHIFTS, "signal") if modality == "image" else (IMAGE_SHIFTS, "image")
    )
    for knob in shift:
        if knob in valid:
            continue
        if knob in other:
            raise ConfigError(
                f"Shift knob '{knob}' applies to {other_modality}s only, but dataset "
                f"'{dataset}' holds {modality}s; its knobs are: {', '.join(valid)}."
            )
        raise ConfigError(
            f"Unknown shift knob '{knob}' for dataset '{dataset}' ({modality}); valid knobs: "
            f"{', '.join(valid)}.{did_you_mean(str(knob), valid)}"
        )
    canonical: dict[str, Any] = {}
    for knob in valid:
        if knob not in shift:
            continue
        if modality == "image":
            value = _check_image_value(knob, shift[knob])
            if value != _IMAGE_IDENTITY[knob]:
                canonical[knob] = value
        else:
            value = _check_signal_value(knob, shift[knob])
            if value != SIGNAL_DEFAULTS[knob]:
                canonical[knob] = value
    return canonical


def shift_suffix(shift: Mapping[str, Any]) -> str:
    """A name suffix for a canonical shift, e.g. ``"+rotation=30+noise=0.1"`` (``""`` for none).

    A rotation range prints as ``rotation=-30..30``; inversion prints as ``+inversion``.
    """
    parts = []
    for knob, value in shift.items():
        if value is True:
            parts.append(f"+{knob}")
        elif isinstance(value, tuple):
            parts.append(f"+{knob}={value[0]:g}..{value[1]:g}")
        else:
            parts.append(f"+{knob}={value:g}")
    return "".join(parts)


def apply_image_geometry(x: Tensor, shift: Mapping[str, Any], seed: int) -> Tensor:
    """Apply the canonical shift's ``scale`` and ``rotation`` (one resampling) to a batch.

    A rotation range draws one angle per image, uniformly, from a generator seeded by ``seed``.
    """
    if "scale" not in shift and "rotation" not in shift:
        return x
    rotation = shift.get("rotation", 0.0)
    if isinstance(rotation, tuple):
        lo, hi = rotation
        generator = seeded_generator(seed, "shift:rotation")
        rotation = lo + (hi - lo) * torch.rand(x.shape[0], generator=generator, dtype=torch.float64)
    return _affine(x, rotation, float(shift.get("scale", 1.0)))


def apply_image_photometry(x: Tensor, shift: Mapping[str, Any], seed: int) -> Tensor:
    """Apply the canonical shift's ``blur``, ``inversion`` and ``noise``, in that order.

    Noise is drawn from a generator seeded by ``seed`` (independent of other knobs).
    """
    if "blur" in shift:
        x = blur(x, shift["blur"])
    if shift.get("inversion"):
        x = invert(x)
    if "noise" in shift:
        x = add_noise(x, shift["noise"], seeded_generator(seed, "shift:noise"))
    return x


def signal_generator_args(shift: Mapping[str, Any]) -> dict[str, Any]:
    """The ``mnist1d`` generator arguments a canonical signal shift sets (:data:`SIGNAL_SHIFTS`).

    ``{"noise": 0.5}`` -> ``{"corr_noise_scale": 0.5, "iid_noise_scale": 0.04}``;
    ``{"shear": s}`` -> ``{"shear_scale": s}``; ``{"translation": t}`` ->
    ``{"max_translation": max(1, t)}`` (the generator needs at least 1, which means no shift).
    """
    args: dict[str, Any] = {}
    if "noise" in shift:
        args["corr_noise_scale"] = float(shift["noise"])
        args["iid_noise_scale"] = IID_NOISE_RATIO * float(shift["noise"])
    if "shear" in shift:
        args["shear_scale"] = float(shift["shear"])
    if "translation" in shift:
        args["max_translation"] = max(1, int(shift["translation"]))
    return args
