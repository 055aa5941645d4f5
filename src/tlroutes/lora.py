"""LoRA adapters through HF PEFT (the optional extra ``tlroutes[lora]``).

Low-rank adaptation (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022)
freezes a pretrained layer's weight :math:`W` and learns a low-rank update beside it:
``y = W x + (alpha / r) · B A x`` with ``A`` of shape ``(r, in)`` and ``B`` of shape ``(out, r)``.
``B`` starts at zero, so the model's output is unchanged until training moves it.

Here LoRA is injected into a model's trunk in place, with PEFT's
:func:`peft.inject_adapter_in_model` (which works for any ``nn.Module``, not only
``transformers`` models) — the model keeps its class, so a :class:`~tlroutes.model.TransferModel`
still has ``features()``, ``forward_heads()`` and the rest::

    model = build_model(domain, task, trunk="transformer")
    model.load_state_dict(pretrained)     # load weights *before* adding LoRA
    apply_lora(model, r=8)                # trunk: LoRA only; heads: trainable; stems: frozen
    model.print_trainable_parameters()
    ...                                   # train as usual
    merge_lora(model)                     # fold B·A into W; plain layers again

Parameter names change under LoRA: ``trunk.blocks.0.attn.qkv.weight`` becomes
``trunk.blocks.0.attn.qkv.base_layer.weight`` beside ``...qkv.lora_A.default.weight`` and
``...qkv.lora_B.default.weight``; :func:`merge_lora` restores the original names.

Install with ``pip install 'tlroutes[lora]'`` (PEFT ≥ 0.15, which has LoRA for ``nn.Conv1d``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from torch import nn

from tlroutes.errors import ConfigError
from tlroutes.model import unfreeze

#: Layer types PEFT's LoRA can wrap (a target of another type is an error).
LORA_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Embedding,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.MultiheadAttention,
)
#: Layer types targeted by default inside the trunk.
DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _peft():
    from tlroutes.errors import require_extra

    return require_extra("peft", "lora", "LoRA")


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer)


def _inside_attention(name: str, modules: dict[str, nn.Module]) -> bool:
    """True when ``name`` lies inside an ``nn.MultiheadAttention`` (whose forward reads its
    ``out_proj.weight`` directly, so wrapping that Linear would silently do nothing)."""
    parts = name.split(".")
    return any(
        isinstance(modules.get(".".join(parts[:i])), nn.MultiheadAttention)
        for i in range(1, len(parts))
    )


def default_lora_targets(model: nn.Module) -> list[str]:
    """Module paths (relative to ``model``) of every ``nn.Linear`` / ``nn.Conv1d`` / ``Conv2d``
    / ``Conv3d`` inside ``model.trunk``: what :func:`apply_lora` targets by default."""
    trunk = getattr(model, "trunk", None)
    if not isinstance(trunk, nn.Module):
        raise ConfigError(
            f"apply_lora() targets the layers of `model.trunk` by default, but this "
            f"{type(model).__name__} has no trunk; pass target_modules=[...] (module paths such "
            "as 'encoder.layers.0.fc1', suffixes such as 'fc1', or patterns such as '*.fc?')."
        )
    modules = dict(model.named_modules())
    return [
        name
        for name, module in modules.items()
        if name.startswith("trunk.")
        and isinstance(module, DEFAULT_TYPES)
        and not _inside_attention(name, modules)
    ]


def _resolve_targets(model: nn.Module, keys: Iterable[str]) -> list[str]:
    """Module paths of the layers that ``keys`` select (see :func:`apply_lora`)."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ConfigError("apply_lora(): target_modules is empty; name at least one layer.")
    modules = dict(model.named_modules())
    chosen: list[str] = []
    for key in keys:
        if any(c in key for c in "*?["):
            hits = [n for n in modules if n and fnmatch.fnmatchcase(n, key)]
        else:
            hits = [n for n in modules if n and (n == key or n.endswith("." + key))]
        usable = [
            n
            for n in hits
            if isinstance(modules[n], LORA_TYPES) and not _inside_attention(n, modules)
        ]
        if not hits:
            layers = [n for n, m in modules.items() if n and isinstance(m, LORA_TYPES)]
            shown = ", ".join(layers[:8]) + (" …" if len(layers) > 8 else "")
            raise ConfigError(
                f"apply_lora(): target '{key}' matched no module of this model. Layers LoRA can "
                f"wrap: {shown or '(none)'}."
            )
        if not usable:
            kinds = sorted({type(modules[n]).__name__ for n in hits})
            raise ConfigError(
                f"apply_lora(): target '{key}' matched only {', '.join(kinds)} module(s) "
                f"({', '.join(hits[:3])}{' …' if len(hits) > 3 else ''}); LoRA wraps "
                f"{', '.join(t.__name__ for t in LORA_TYPES)} layers (a layer inside an "
                "nn.MultiheadAttention is adapted by targeting the attention module itself)."
            )
        chosen.extend(n for n in usable if n not in chosen)
    return chosen


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
    trainable: Iterable[str] | None = None,
) -> nn.Module:
    """Inject LoRA adapters into ``model`` in place and leave only them (and the heads) trainable.

    Uses PEFT's ``LoraConfig`` and ``inject_adapter_in_model``; each target layer becomes a PEFT
    LoRA layer holding the original as ``base_layer``. Afterwards:

    - the LoRA matrices (``lora_A``, ``lora_B``) are trainable; ``lora_B`` starts at zero, so
      the output is unchanged until the first update;
    - every other parameter is frozen (``requires_grad=False``): the trunk's base weights,
      norms and biases, and the stems;
    - the parts in ``trainable`` are unfrozen again — by default the heads, which are new for
      the target task and must learn. (Norm layers' running statistics still update in
      ``train()`` mode; they are buffers, not parameters.)

    Args:
        model: the model, with its pretrained weights already loaded. Any ``nn.Module``; the
            default targets need a ``trunk`` attribute (as :class:`~tlroutes.model.TransferModel`
            has).
        r: the rank of the update. Default ``8``.
        alpha: the LoRA scaling numerator; the update is scaled by ``alpha / r``. Default ``16``.
        dropout: dropout on the LoRA branch's input. Default ``0.0``.
        target_modules: the layers to adapt, each entry a module path relative to ``model``
            (``"trunk.blocks.0.attn.qkv"``), a suffix matching every path that ends with it as
            PEFT does (``"qkv"``), or an fnmatch pattern over paths (``"trunk.blocks.*.mlp.*"``).
            Patterns keep only the layers LoRA can wrap (``nn.Linear``, ``nn.Embedding``,
            ``nn.Conv1d/2d/3d``, ``nn.MultiheadAttention``). Default ``None``: every
            ``nn.Linear`` and ``nn.Conv1d/2d/3d`` inside ``model.trunk`` (see
            :func:`default_lora_targets`).
        trainable: module paths left trainable besides the LoRA matrices. Default ``None``:
            ``("heads",)`` when the model has ``heads``, else nothing. Pass ``()`` to train LoRA
            alone, or e.g. ``("heads", "stems.xray")`` to also train a new stem.

    Returns ``model`` itself (same object, changed in place).

    Raises :class:`~tlroutes.errors.MissingExtraError` when PEFT is not installed, and
    :class:`~tlroutes.errors.ConfigError` when a target matches no module or only layers LoRA
    cannot wrap, when the default targets find no layer in the trunk, when ``r < 1``, or when the
    model already carries LoRA layers (merge them first with :func:`merge_lora`).
    """
    peft = _peft()
    if int(r) != r or r < 1:
        raise ConfigError(f"apply_lora() needs an integer rank r >= 1, got {r!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"apply_lora() needs 0 <= dropout < 1, got {dropout}.")
    if any(_is_lora_layer(m) for m in model.modules()):
        raise ConfigError(
            "This model already has LoRA layers; call merge_lora(model) before applying LoRA "
            "again."
        )
    if target_modules is None:
        targets = default_lora_targets(model)
        if not targets:
            raise ConfigError(
                "apply_lora(): the trunk has no nn.Linear or nn.Conv1d/2d/3d layer to adapt; "
                "pass target_modules=[...]."
            )
    else:
        targets = _resolve_targets(model, target_modules)
    if trainable is None:
        trainable = ("heads",) if isinstance(getattr(model, "heads", None), nn.Module) else ()
    trainable = [trainable] if isinstance(trainable, str) else list(trainable)

    config = peft.LoraConfig(
        r=int(r),
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        # An anchored regex (PEFT full-matches a string) selects exactly these paths and no
        # deeper module whose path merely ends the same way.
        target_modules="|".join(re.escape(t) for t in targets),
        bias="none",
    )
    try:
        peft.inject_adapter_in_model(config, model)
    except ValueError as exc:
        raise ConfigError(f"apply_lora(): PEFT could not adapt the targets: {exc}") from exc
    if trainable:
        unfreeze(model, parts=trainable)
    return model


def lora_parameters(model: nn.Module) -> list[str]:
    """Names of the LoRA parameters (``lora_A`` / ``lora_B`` / …) in ``model``."""
    return [n for n, _ in model.named_parameters() if ".lora_" in n]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base layer and remove the adapters, in place.

    Each PEFT LoRA layer's ``W + (alpha / r) B A`` is written into the base weight and the layer
    is replaced by its base layer, so the model has its original structure and parameter names
    again (``...qkv.weight``) and runs at the original speed; its outputs are unchanged (up to
    float rounding). The merged layers keep ``requires_grad=False``; unfreeze them with
    :func:`~tlroutes.model.unfreeze` to train them further. Returns ``model``.

    Raises :class:`~tlroutes.errors.MissingExtraError` without PEFT and
    :class:`~tlroutes.errors.ConfigError` when the model has no LoRA layer.
    """
    _peft()
    layers = [(n, m) for n, m in model.named_modules() if n and _is_lora_layer(m)]
    if not layers:
        raise ConfigError("merge_lora(): this model has no LoRA layer (see apply_lora()).")
    for name, layer in layers:
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    return model
