"""Hugging Face vision models (``pixel_values`` input: ViT, ConvNeXt, ResNet …) as ``"image"``
trunks, with the input their image processor describes (``preprocessor_config.json``).

Built through the ``hf:<folder or id>`` trunk name (:mod:`tlroutes.backbones.pretrained.hf_named`);
``transformers`` is imported only when a trunk is built.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.backbones.inputs import InputConfig
from tlroutes.errors import ConfigError, DataError

#: PIL resampling ids (what ``resample`` holds in a processor file) → torchvision's names.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
#: The vision trunk's pooling of token outputs: the class token (ViT's own) or their mean.
IMAGE_POOLS: tuple[str, ...] = ("cls", "mean")


def vision_width(config: Any) -> int:
    """The feature width of a vision model's config: the last stage's width for a CNN
    (``hidden_sizes[-1]``: ConvNeXt, ResNet), else ``hidden_size`` (ViT)."""
    sizes = getattr(config, "hidden_sizes", None)
    if isinstance(sizes, list | tuple) and sizes and isinstance(sizes[-1], int):
        return int(sizes[-1])
    for key in ("hidden_size", "num_features", "embed_dim"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"Cannot tell the feature width of a {type(config).__name__} (no "
                      "hidden_sizes or hidden_size); this model type is not supported.")


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        edge = value.get("shortest_edge")
        if isinstance(edge, int):
            return edge, edge
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def processor_input_config(folder: Path, config: Any) -> InputConfig:
    """The :class:`InputConfig` of the model in ``folder``: size, mean, std and interpolation
    from its ``preprocessor_config.json`` (the centre crop's size when it crops), else the
    size in ``config.json`` (``image_size``) and the statistics of a pretrained RGB trunk."""
    channels = int(getattr(config, "num_channels", 3) or 3)
    size = _pair(getattr(config, "image_size", None))
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        return InputConfig(size=size, channels=channels, pretrained=True)
    try:
        proc = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file} cannot be read as JSON ({exc}); re-save it with the image "
                          "processor's save_pretrained().") from exc
    if proc.get("do_center_crop") and _pair(proc.get("crop_size")):
        size = _pair(proc.get("crop_size"))
    elif _pair(proc.get("size")):
        size = _pair(proc.get("size"))
    mean, std = proc.get("image_mean"), proc.get("image_std")
    if not proc.get("do_normalize", True) or mean is None or std is None:
        mean = std = None
    else:
        mean = tuple(float(v) for v in (mean if isinstance(mean, list) else [mean] * channels))
        std = tuple(float(v) for v in (std if isinstance(std, list) else [std] * channels))
    return InputConfig(size=size, mean=mean, std=std,
                       interpolation=_RESAMPLE.get(proc.get("resample"), "bilinear"),
                       channels=channels, pretrained=True)


class HFImageTrunk(nn.Module):
    """A transformers vision model as an ``"image"`` trunk: ``(B, C, H, W)`` → ``(B, out_dim)``.

    The model is ``self.model`` (transformers' parameter names). Features: a CNN's pooled output
    (ConvNeXt's normalised average, ResNet's average pool); a ViT's class token (``pool="cls"``)
    or the mean of its tokens (``"mean"``). A model that only takes its own image size (ViT) gets
    its input resized to it. The default stem (``imagenet``) scales, resizes and normalises the
    images as the model's image processor does (:attr:`default_stem_args`).
    """

    input_kind = "image"
    default_stem = "imagenet"

    def __init__(self, model: nn.Module, *, out_dim: int, input_config: InputConfig,
                 pool: str = "cls") -> None:
        super().__init__()
        if pool not in IMAGE_POOLS:
            raise ConfigError(f"pool must be one of {', '.join(IMAGE_POOLS)}, got {pool!r}.")
        self.model = model
        self.out_dim = int(out_dim)
        self.in_width = int(input_config.channels or 3)
        self.pool = pool
        config = model.config
        params = inspect.signature(model.forward).parameters
        # A ViT's position embeddings are for one image size; any other size is resized to it.
        self.fixed_size = (_pair(getattr(config, "image_size", None))
                           if "interpolate_pos_encoding" in params else None)
        stats = input_config.statistics() or ((0.0,) * self.in_width, (1.0,) * self.in_width)
        self.default_stem_args: dict[str, Any] = {
            "size": input_config.size, "mean": stats[0], "std": stats[1]}

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_width:
            raise DataError(f"{type(self.model).__name__} expects images (B, {self.in_width}, H, "
                            f"W), got shape {tuple(x.shape)}.")
        if self.fixed_size is not None and tuple(x.shape[-2:]) != self.fixed_size:
            x = F.interpolate(x, size=self.fixed_size, mode="bilinear", align_corners=False)
        out = self.model(pixel_values=x)
        h = out.last_hidden_state
        if h.dim() == 4:  # a CNN's feature maps (B, C, H, W)
            pooled = getattr(out, "pooler_output", None)
            return pooled.flatten(1) if pooled is not None else h.mean((2, 3))
        return h[:, 0] if self.pool == "cls" else h.mean(1)

    def extra_repr(self) -> str:
        return f"in_width={self.in_width}, out_dim={self.out_dim}, pool={self.pool!r}"


def drop_learned_pooler(model: nn.Module) -> None:
    """Remove a BERT/ViT-style pooler (a dense layer the features do not use); a CNN's pooling
    (ResNet's average pool) is kept."""
    if (getattr(model, "pooler", None) is not None
            and "add_pooling_layer" in inspect.signature(type(model).__init__).parameters):
        model.pooler = None
