"""Built-in stems: input adapters from one domain's raw input to a trunk's input.

A stem reads ``(B, *domain.input_shape)`` and returns what its trunk's ``input_kind`` asks for:

============  ==========  ==================  ===============================================
stem          modalities  trunk input_kind    what it does
============  ==========  ==================  ===============================================
``linear``    image,      vector              flatten, ``Linear(prod(shape), width)``, ReLU
              signal,
              tabular
``bag``       text        vector              ``Embedding(vocab_size, width)``, mean over tokens
``conv2d``    image       image               ``Conv2d(C, width, 3, padding=1)``, ReLU
``conv1d``    signal      sequence            ``Conv1d(C, width, 5, padding=2)``, ReLU
``patch2d``   image       tokens              non-overlapping patches → ``(B, T, width)``
``patch1d``   signal      tokens              non-overlapping 1-D patches → ``(B, T, width)``
``features``  tabular     tokens              one token per feature (a per-feature linear map)
``embedding`` text        tokens              ``Embedding(vocab_size, width)`` → ``(B, T, width)``
============  ==========  ==================  ===============================================

Every stem checks the per-sample shape of its input and raises :class:`~tlroutes.errors.DataError`
with the expected shape, so a mismatch never surfaces as a deep torch error.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from tlroutes.backbones.registry import STEMS, TRUNKS, check_trunk, register_stem
from tlroutes.errors import ConfigError, DataError
from tlroutes.problem import Domain

#: The most tokens an automatically chosen patch size may give.
AUTO_MAX_TOKENS = 64


class Stem(nn.Module):
    """Base class: records the domain's ``input_shape`` and checks inputs against it.

    Subclasses set class attributes ``modalities`` and ``input_kind`` and call :meth:`check`
    first thing in ``forward``.

    Args:
        domain: the domain whose inputs the stem reads.
        width: the width the trunk expects (its ``in_width``).
    """

    modalities: tuple[str, ...] = ()
    input_kind: str = ""

    def __init__(self, domain: Domain, width: int) -> None:
        super().__init__()
        self.domain_name = domain.name
        self.input_shape = tuple(domain.input_shape)
        self.width = int(width)

    def check(self, x: Tensor) -> None:
        """Raise :class:`DataError` unless ``x`` has shape ``(B, *input_shape)``."""
        if x.shape[1:] != self.input_shape:
            raise DataError(
                f"{type(self).__name__} for domain '{self.domain_name}' expects inputs of "
                f"shape (B, {', '.join(map(str, self.input_shape))}), got "
                f"(B, {', '.join(map(str, x.shape[1:]))}) (full shape {tuple(x.shape)}); "
                "check the data or the domain's input_shape."
            )

    def extra_repr(self) -> str:
        return f"domain={self.domain_name!r}, input_shape={self.input_shape}"


def _check_ids(stem: Stem, x: Tensor) -> None:
    stem.check(x)
    if x.is_floating_point():
        raise DataError(
            f"{type(stem).__name__} for text domain '{stem.domain_name}' expects integer "
            f"token ids, got dtype {x.dtype}; convert with x.long()."
        )


def _need_vocab(domain: Domain, vocab_size: int | None) -> int:
    if vocab_size is None or vocab_size < 1:
        raise ConfigError(
            f"Text domain '{domain.name}' needs the vocabulary size for its embedding stem; pass "
            "vocab_size=<number of token ids> in stem_args (or to create_stem)."
        )
    return int(vocab_size)


def _need_dims(domain: Domain, dims: int, layout: str) -> None:
    if len(domain.input_shape) != dims:
        raise ConfigError(
            f"Domain '{domain.name}' ({domain.modality}) has input_shape {domain.input_shape}; "
            f"this stem needs {layout}."
        )


@register_stem("linear")
class LinearStem(Stem):
    """Flatten, ``Linear(prod(input_shape), width)``, then ReLU (skip it with ``activation=False``).

    Args:
        activation: apply ReLU after the projection. Default ``True``.
    """

    modalities = ("image", "signal", "tabular")
    input_kind = "vector"

    def __init__(self, domain: Domain, width: int, activation: bool = True) -> None:
        super().__init__(domain, width)
        self.proj = nn.Linear(math.prod(self.input_shape), width)
        self.act = nn.ReLU() if activation else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        return self.act(self.proj(x.flatten(1)))


class _TokenStem(Stem):
    """Token ids ``(B, T)`` → an ``Embedding(vocab_size, width)`` of them (the subclass says what
    it makes of the embeddings)."""

    modalities = ("text",)

    def __init__(
        self,
        domain: Domain,
        width: int,
        vocab_size: int | None = None,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__(domain, width)
        _need_dims(domain, 1, "token ids of shape (T,)")
        self.num_tokens = self.input_shape[0]
        self.embed = nn.Embedding(_need_vocab(domain, vocab_size), width, padding_idx=padding_idx)
        self.padding_idx = padding_idx


@register_stem("bag")
class BagStem(_TokenStem):
    """Text → vector: embed each token id and average (padding ids left out when given).

    Args:
        vocab_size: number of token ids. Required.
        padding_idx: the id used for padding, not counted in the mean. Default ``None``.
    """

    input_kind = "vector"

    def forward(self, x: Tensor) -> Tensor:
        _check_ids(self, x)
        emb = self.embed(x)
        if self.padding_idx is None:
            return emb.mean(1)
        keep = (x != self.padding_idx).unsqueeze(-1).to(emb.dtype)
        return (emb * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class _ConvStem(Stem):
    """A same-padded convolution over the input's channels, then ReLU (the subclass names the
    convolution, the input's dimensions and its shape in words)."""

    _conv: type[nn.Conv1d] | type[nn.Conv2d]
    _dims: int
    _shape: str
    _kernel_size: int

    def __init__(self, domain: Domain, width: int, kernel_size: int | None = None) -> None:
        super().__init__(domain, width)
        kernel_size = self._kernel_size if kernel_size is None else kernel_size
        _need_dims(domain, self._dims, self._shape)
        self.conv = self._conv(self.input_shape[0], width, kernel_size,
                               padding=kernel_size // 2)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        return self.act(self.conv(x))


@register_stem("conv2d")
class Conv2dStem(_ConvStem):
    """Image → image: ``Conv2d(C, width, kernel_size, padding=kernel_size // 2)``, ReLU;
    ``kernel_size`` (the convolution's size) defaults to 3."""

    modalities, input_kind = ("image",), "image"
    _conv, _dims, _shape, _kernel_size = nn.Conv2d, 3, "images of shape (C, H, W)", 3


@register_stem("conv1d")
class Conv1dStem(_ConvStem):
    """Signal → sequence: ``Conv1d(C, width, kernel_size, padding=kernel_size // 2)``, ReLU;
    ``kernel_size`` (the convolution's size) defaults to 5."""

    modalities, input_kind = ("signal",), "sequence"
    _conv, _dims, _shape, _kernel_size = nn.Conv1d, 2, "signals of shape (C, L)", 5


def auto_patch(sizes: tuple[int, ...], max_tokens: int) -> int:
    """The patch size for spatial ``sizes``: it divides every size; the smallest one of at least 2
    that gives between 4 and ``max_tokens`` tokens, else the smallest that fits ``max_tokens``.
    """
    common = [p for p in range(1, min(sizes) + 1) if all(s % p == 0 for s in sizes)]

    def tokens(p: int) -> int:
        return math.prod(s // p for s in sizes)

    for p in common:
        if p >= 2 and 4 <= tokens(p) <= max_tokens:
            return p
    for p in common:
        if tokens(p) <= max_tokens:
            return p
    return common[-1]


class _PatchStem(Stem):
    """Shared body of the patch stems: a convolution with ``kernel = stride = patch``.

    ``max_tokens`` (both stems): the cap used when choosing the patch. Default ``64`` (or the
    trunk's ``max_tokens`` when smaller).
    """

    dims = 2

    def __init__(
        self, domain: Domain, width: int, patch: int | None = None,
        max_tokens: int = AUTO_MAX_TOKENS,
    ) -> None:
        super().__init__(domain, width)
        layout = "images of shape (C, H, W)" if self.dims == 2 else "signals of shape (C, L)"
        _need_dims(domain, self.dims + 1, layout)
        sizes = self.input_shape[1:]
        self.patch = int(patch) if patch else auto_patch(sizes, max_tokens)
        if any(s % self.patch for s in sizes):
            raise ConfigError(
                f"Patch size {self.patch} does not divide the input size {sizes} of domain "
                f"'{domain.name}'; pick a divisor or leave patch=None to choose one."
            )
        self.num_tokens = math.prod(s // self.patch for s in sizes)
        conv = nn.Conv2d if self.dims == 2 else nn.Conv1d
        self.proj = conv(self.input_shape[0], width, self.patch, stride=self.patch)

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        return self.proj(x).flatten(2).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, patch={self.patch}, num_tokens={self.num_tokens}"


@register_stem("patch2d")
class Patch2dStem(_PatchStem):
    """Image → tokens: non-overlapping ``patch × patch`` patches, each linearly embedded.

    ``patch``: patch side; must divide H and W. Default ``None``: the smallest divisor >= 2 that
    gives at most ``max_tokens`` tokens (8×8 → 2, 28×28 → 4, 32×32 → 4).
    """

    modalities, input_kind, dims = ("image",), "tokens", 2


@register_stem("patch1d")
class Patch1dStem(_PatchStem):
    """Signal → tokens: non-overlapping windows of ``patch`` steps, each linearly embedded.

    ``patch``: window length; must divide L. Default ``None``: the smallest divisor >= 2 that
    gives at most ``max_tokens`` tokens (L=40 → 2).
    """

    modalities, input_kind, dims = ("signal",), "tokens", 1


@register_stem("features")
class FeatureTokenStem(Stem):
    """Tabular → tokens: feature ``d`` becomes token ``x_d * weight[d] + bias[d]`` (FT-Transformer
    style), giving ``(B, D, width)``."""

    modalities = ("tabular",)
    input_kind = "tokens"

    def __init__(self, domain: Domain, width: int) -> None:
        super().__init__(domain, width)
        _need_dims(domain, 1, "feature vectors of shape (D,)")
        self.num_tokens = self.input_shape[0]
        self.weight = nn.Parameter(torch.randn(self.num_tokens, width) / math.sqrt(width))
        self.bias = nn.Parameter(torch.zeros(self.num_tokens, width))

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        return x.unsqueeze(-1) * self.weight + self.bias


@register_stem("embedding")
class TokenEmbeddingStem(_TokenStem):
    """Text → tokens: ``Embedding(vocab_size, width)`` over token ids ``(B, T)``.

    Args:
        vocab_size: number of token ids. Required.
        padding_idx: the id used for padding (its embedding stays zero). Default ``None``.
    """

    input_kind = "tokens"

    def forward(self, x: Tensor) -> Tensor:
        _check_ids(self, x)
        return self.embed(x)


def _is_patch(cls: object) -> bool:
    return isinstance(cls, type) and issubclass(cls, _PatchStem)


def stems_for(modality: str, input_kind: str) -> list[str]:
    """Names of the registered stems that read ``modality`` and feed ``input_kind``, in
    registration order (the first is the one ``kind="auto"`` picks)."""
    return [
        name
        for name, cls in STEMS.items()
        if modality in getattr(cls, "modalities", ())
        and getattr(cls, "input_kind", "") == input_kind
    ]


def trunks_for(modality: str) -> list[str]:
    """Names of the registered trunks some stem can feed from ``modality``."""
    kinds = {
        getattr(cls, "input_kind", "")
        for _, cls in STEMS.items()
        if modality in getattr(cls, "modalities", ())
    }
    return [name for name, b in TRUNKS.items() if getattr(b, "input_kind", None) in kinds]


def create_stem(domain: Domain, trunk: nn.Module, kind: str = "auto", **kwargs: Any) -> Stem:
    """Build the stem that turns ``domain``'s inputs into ``trunk``'s input.

    Args:
        domain: the domain whose inputs the stem reads.
        trunk: the trunk it feeds; its ``input_kind`` and ``in_width`` decide the stem's output.
        kind: a registered stem name (see the module table) or ``"auto"`` to pick the one for
            ``(domain.modality, trunk.input_kind)``. Default ``"auto"``.
        **kwargs: the stem's own arguments, e.g. ``vocab_size`` for text or ``patch``.

    Raises :class:`ConfigError` when no stem links the modality to the trunk (the message lists
    the trunks that do work), when ``kind`` does not fit, or an argument is unknown.
    """
    check_trunk(trunk)
    wanted = trunk.input_kind
    fitting = stems_for(domain.modality, wanted)
    if kind == "auto":
        if not fitting:
            raise ConfigError(
                f"No stem turns {domain.modality} inputs (domain '{domain.name}') into the "
                f"'{wanted}' input of trunk {type(trunk).__name__}. Trunks that work for "
                f"{domain.modality}: {', '.join(trunks_for(domain.modality)) or '(none)'}."
            )
        # A trunk may name the stem its inputs need (a pretrained one: its own normalisation).
        preferred = getattr(trunk, "default_stem", None)
        kind = preferred if preferred in fitting else fitting[0]
        if kind == preferred:  # the trunk's own input settings (size, statistics) as defaults
            kwargs = {**getattr(trunk, "default_stem_args", {}), **kwargs}
    cls = STEMS.get(kind)
    if kind not in fitting:
        raise ConfigError(
            f"Stem '{kind}' reads {'/'.join(getattr(cls, 'modalities', ()))} and feeds "
            f"'{getattr(cls, 'input_kind', '?')}' trunks, but domain '{domain.name}' is "
            f"{domain.modality} and trunk {type(trunk).__name__} wants '{wanted}'. "
            f"Stems that fit: {', '.join(fitting) or '(none)'}."
        )
    max_tokens = getattr(trunk, "max_tokens", None)
    if max_tokens is not None and "max_tokens" not in kwargs and _is_patch(cls):
        kwargs["max_tokens"] = min(AUTO_MAX_TOKENS, int(max_tokens))
    stem = STEMS.build(kind, domain, trunk.in_width, **kwargs)
    tokens = getattr(stem, "num_tokens", None)
    if max_tokens is not None and tokens is not None and tokens > max_tokens:
        raise ConfigError(
            f"The {kind} stem for domain '{domain.name}' makes {tokens} tokens but the trunk "
            f"holds positions for max_tokens={max_tokens}; use a larger patch or a trunk with "
            "more max_tokens."
        )
    return stem
