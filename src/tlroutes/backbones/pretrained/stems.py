"""The stems that go with pretrained trunks (registered here): ``imagenet`` and ``token_ids``.

- ``imagenet`` (image → image): rescales values to [0, 1], resizes, repeats a grey channel to RGB
  and applies the ImageNet mean / std — the input a pretrained image trunk expects.
- ``token_ids`` (text → tokens): integer token ids passed through unchanged, for a transformer
  trunk that embeds them with its own pretrained word embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tlroutes.backbones.inputs import IMAGENET_MEAN, IMAGENET_STD
from tlroutes.backbones.registry import register_stem
from tlroutes.backbones.stems import Stem
from tlroutes.errors import ConfigError, DataError
from tlroutes.problem import Domain


@register_stem("imagenet")
class ImageNetStem(Stem):
    """Image → image, the input a pretrained ImageNet trunk expects; no learned parameters.

    Steps: ``(x - low) / (high - low)`` to [0, 1] (inputs a transform normalised, as
    ``domain.normalization`` says, are instead un-normalised to [0, 1]); resize to ``size``
    (bilinear); repeat a grey channel to ``width`` (3) channels; subtract ``mean`` and divide by
    ``std`` per channel.

    Args:
        size: output side (int) or ``(H, W)``. Default ``64`` (an 8×8 digit becomes 64×64);
            ``None`` keeps the input size. Pretrained CNNs see more detail at 96-224 but cost
            more; 64 is a quick CPU default.
        value_range: ``(low, high)`` of the raw inputs. Default ``(0.0, 1.0)``.
        mean: per-channel mean after scaling. Default ImageNet's ``(0.485, 0.456, 0.406)``.
        std: per-channel standard deviation. Default ImageNet's ``(0.229, 0.224, 0.225)``.
    """

    modalities = ("image",)
    input_kind = "image"

    def __init__(
        self,
        domain: Domain,
        width: int,
        size: int | Sequence[int] | None = 64,
        value_range: Sequence[float] = (0.0, 1.0),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(domain, width)
        if len(self.input_shape) != 3:
            raise ConfigError(
                f"The imagenet stem needs images of shape (C, H, W); domain '{domain.name}' has "
                f"input_shape {self.input_shape}."
            )
        channels = self.input_shape[0]
        if channels not in (1, width):
            raise ConfigError(
                f"The imagenet stem repeats a grey channel or passes {width} channels through; "
                f"domain '{domain.name}' has {channels} channels. Use the conv2d stem instead."
            )
        if len(mean) != width or len(std) != width or any(s <= 0 for s in std):
            raise ConfigError(
                f"The imagenet stem needs {width} mean and {width} positive std values, got "
                f"mean={tuple(mean)}, std={tuple(std)}."
            )
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ConfigError(
                f"value_range must be (low, high) with high > low, got {tuple(value_range)}."
            )
        if size is None:
            self.size = tuple(self.input_shape[1:])
        else:
            self.size = (int(size), int(size)) if isinstance(size, int) else tuple(map(int, size))
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"size must be a positive int or (H, W), got {size!r}.")
        self.low, self.high = low, high
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        # Inputs a transform already normalised (domain.normalization) are first brought back to
        # [0, 1], so that this stem's own statistics apply once, whatever the transform used.
        given = domain.normalization
        in_mean, in_std = given if given is not None else ((0.0,), (1.0,))
        self.undo = given is not None
        self.register_buffer("in_mean", torch.tensor(in_mean, dtype=torch.float32).view(
            1, -1, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(in_std, dtype=torch.float32).view(
            1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        if self.undo:
            x = x.float() * self.in_std + self.in_mean
        else:
            x = (x.float() - self.low) / (self.high - self.low)
        if tuple(x.shape[-2:]) != self.size:
            down = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
            x = F.interpolate(
                x, size=self.size, mode="bilinear", align_corners=False, antialias=down
            )
        if x.shape[1] == 1 and self.width != 1:
            x = x.expand(-1, self.width, -1, -1)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, size={self.size}"


@register_stem("token_ids")
class TokenIdsStem(Stem):
    """Text → tokens: integer token ids ``(B, T)`` passed through unchanged.

    Only for trunks that embed ids themselves with their pretrained word embeddings
    (``accepts_token_ids = True``: :func:`minilm_l6`, :func:`hf_trunk`). Make the ids with the
    trunk's own tokenizer (:func:`minilm_tokenize`, :func:`hf_tokenize`).
    """

    modalities = ("text",)
    input_kind = "tokens"

    def __init__(self, domain: Domain, width: int) -> None:
        super().__init__(domain, width)
        if len(self.input_shape) != 1:
            raise ConfigError(
                f"The token_ids stem needs token ids of shape (T,); domain '{domain.name}' has "
                f"input_shape {self.input_shape}."
            )
        self.num_tokens = self.input_shape[0]

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        if x.is_floating_point():
            raise DataError(
                f"TokenIdsStem for text domain '{self.domain_name}' expects integer token ids, "
                f"got dtype {x.dtype}; convert with x.long()."
            )
        return x
