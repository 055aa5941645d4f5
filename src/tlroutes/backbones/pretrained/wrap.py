"""A user's own network as a trunk: :func:`wrap_trunk` finds its input width, probes its output
width and pools what it returns to ``(B, D)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tlroutes.backbones.registry import INPUT_KINDS
from tlroutes.checks import positive_int
from tlroutes.errors import ConfigError, DataError

POOLS: tuple[str, ...] = ("auto", "none", "avg", "tokens", "cls")




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
        if value is not None:
            positive_int(f"wrap_trunk: {name}", value)
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
