"""Built-in trunks: the part of a model that transfers.

Every trunk carries three attributes:

- ``input_kind``: what it reads from its stem. ``"vector"``: ``(B, in_width)``; ``"image"``:
  ``(B, in_width, H, W)``; ``"sequence"``: ``(B, in_width, L)``; ``"tokens"``: ``(B, T, in_width)``.
- ``in_width``: the channel or token width it expects.
- ``out_dim``: the width of the pooled features it returns, always ``(B, out_dim)``.

Defaults are small so that a trunk trains quickly on a laptop CPU. Build one by name with
:func:`tlroutes.backbones.create_trunk`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.backbones.registry import register_trunk
from tlroutes.errors import ConfigError, DataError

NORMS: tuple[str, ...] = ("batch", "group", "none")


@register_trunk("mlp")
class MLPTrunk(nn.Module):
    """A stack of ``Linear → ReLU → Dropout`` blocks over a feature vector.

    Args:
        width: hidden and output width. Default ``128``.
        depth: number of blocks. Default ``2``.
        dropout: dropout after each block. Default ``0.0``.
        in_width: width expected from the stem. Default ``None``, meaning ``width``.
    """

    input_kind = "vector"

    def __init__(
        self, width: int = 128, depth: int = 2, dropout: float = 0.0, in_width: int | None = None
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ConfigError(f"mlp trunk needs depth >= 1 and width >= 1, got {depth}, {width}.")
        self.in_width = int(in_width or width)
        self.out_dim = int(width)
        blocks = []
        for i in range(depth):
            layer = OrderedDict(
                fc=nn.Linear(self.in_width if i == 0 else width, width),
                act=nn.ReLU(),
                drop=nn.Dropout(dropout),
            )
            blocks.append(nn.Sequential(layer))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    """A normalisation layer: ``"batch"``, ``"group"`` (up to 8 groups) or ``"none"``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"Unknown norm '{kind}'; use one of {', '.join(NORMS)}.")


class _ConvTrunk(nn.Module):
    """Shared body of the 1-D and 2-D CNN trunks (``dims`` picks which)."""

    dims = 2

    def __init__(
        self,
        channels: Sequence[int],
        norm: str,
        kernel_size: int,
        dropout: float,
        in_width: int | None,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ConfigError(
                f"CNN trunk needs at least one stage of >= 1 channel, got {channels}."
            )
        if norm not in NORMS:
            raise ConfigError(f"Unknown norm '{norm}'; use one of {', '.join(NORMS)}.")
        conv = nn.Conv2d if self.dims == 2 else nn.Conv1d
        self.in_width = int(in_width or channels[0])
        self.out_dim = channels[-1]
        stages = []
        previous = self.in_width
        for i, width in enumerate(channels):
            layers = OrderedDict(
                conv=conv(
                    previous,
                    width,
                    kernel_size,
                    stride=1 if i == 0 else 2,
                    padding=kernel_size // 2,
                    bias=norm == "none",
                ),
                norm=_norm(norm, width, self.dims),
                act=nn.ReLU(),
            )
            stages.append(nn.Sequential(layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(x)
        return self.drop(x.flatten(2).mean(-1))


@register_trunk("cnn2d")
class CNN2dTrunk(_ConvTrunk):
    """A small 2-D CNN: one ``conv → norm → ReLU`` per stage, global average pooling.

    Every stage after the first halves the resolution (stride 2), so an 8×8 image becomes 4×4.

    Args:
        channels: output channels of each stage. Default ``(32, 64)``.
        norm: ``"batch"``, ``"group"`` or ``"none"``. Default ``"batch"``.
        kernel_size: convolution size. Default ``3``.
        dropout: dropout on the pooled features. Default ``0.0``.
        in_width: channels expected from the stem. Default ``None``, meaning ``channels[0]``.
    """

    input_kind = "image"
    dims = 2

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        norm: str = "batch",
        kernel_size: int = 3,
        dropout: float = 0.0,
        in_width: int | None = None,
    ) -> None:
        super().__init__(channels, norm, kernel_size, dropout, in_width)


@register_trunk("cnn1d")
class CNN1dTrunk(_ConvTrunk):
    """A small 1-D CNN for signals: one ``conv → norm → ReLU`` per stage, global average pooling.

    Args:
        channels: output channels of each stage. Default ``(32, 64)``.
        norm: ``"batch"``, ``"group"`` or ``"none"``. Default ``"batch"``.
        kernel_size: convolution size. Default ``5``.
        dropout: dropout on the pooled features. Default ``0.0``.
        in_width: channels expected from the stem. Default ``None``, meaning ``channels[0]``.
    """

    input_kind = "sequence"
    dims = 1

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        norm: str = "batch",
        kernel_size: int = 5,
        dropout: float = 0.0,
        in_width: int | None = None,
    ) -> None:
        super().__init__(channels, norm, kernel_size, dropout, in_width)


class SelfAttention(nn.Module):
    """Multi-head self-attention (``qkv`` projection, scaled dot product, ``proj``)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, int(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(dim, hidden),
                act=nn.GELU(),
                drop1=nn.Dropout(dropout),
                fc2=nn.Linear(hidden, dim),
                drop2=nn.Dropout(dropout),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_trunk("transformer")
class TransformerTrunk(nn.Module):
    """A small pre-norm transformer encoder over tokens, with learned positional embeddings.

    Parameter names: ``pos_embed`` (positions), ``cls_token`` (when ``pool="cls"``),
    ``blocks.<i>.norm1`` / ``norm2`` / ``attn`` / ``mlp`` and a final ``norm`` (all norms are
    LayerNorms, so the pattern ``"*norm*"`` finds them).

    Args:
        dim: token width (``in_width`` and ``out_dim``). Default ``64``.
        depth: number of blocks. Default ``2``.
        heads: attention heads; must divide ``dim``. Default ``4``.
        mlp_ratio: hidden width of each block's MLP relative to ``dim``. Default ``2.0``.
        dropout: dropout in attention and MLPs. Default ``0.0``.
        max_tokens: the most tokens an input may have (size of ``pos_embed``). Default ``256``.
        pool: ``"cls"`` (a learned class token) or ``"mean"`` (mean of the tokens). Default
            ``"cls"``.
    """

    input_kind = "tokens"

    def __init__(
        self,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        max_tokens: int = 256,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"transformer trunk: heads ({heads}) must divide dim ({dim}).")
        if pool not in ("cls", "mean"):
            raise ConfigError(f"transformer trunk: pool must be 'cls' or 'mean', got '{pool}'.")
        self.in_width = self.out_dim = int(dim)
        self.max_tokens = int(max_tokens)
        self.pool = pool
        extra = 1 if pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if extra else None
        self.pos_embed = nn.Parameter(torch.zeros(1, max_tokens + extra, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        if t > self.max_tokens:
            raise DataError(
                f"transformer trunk got {t} tokens but holds positions for max_tokens="
                f"{self.max_tokens}; use a larger patch or build the trunk with more max_tokens."
            )
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            t += 1
        x = x + self.pos_embed[:, :t]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0] if self.cls_token is not None else x.mean(1)
