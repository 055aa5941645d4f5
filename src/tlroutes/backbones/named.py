"""Trunks named by where they come from: ``timm:<name>``, ``hf:<folder or hub id>``,
``module:<package.module:factory>`` and the ``tlroutes.trunks`` entry-point group.

The trunk registry (:data:`~tlroutes.backbones.registry.TRUNKS`) asks :func:`resolve_trunk` for a
name it does not hold, so these names work wherever a registered name does: ``model.trunk`` in a
run file, ``--candidate`` on the command line, :func:`~tlroutes.backbones.create_trunk` in Python.

- ``timm:resnet18``: ``timm.create_model(name, num_classes=0)`` (the ``vision`` extra) as an
  ``"image"`` trunk whose feature width is read from the model (``num_features``). Its input size,
  mean, std and interpolation come from timm's pretrained config and set the image transforms.
  Pretrained weights come from the local Hugging Face cache or a file (``weights:``), looked up
  without a network call; a download happens only with ``download: true`` (and not under
  ``HF_HUB_OFFLINE=1``).
- ``hf:models/my-vit`` or ``hf:google/vit-base-patch16-224``: a transformers model from a local
  folder or the local Hugging Face cache (the hub only with ``download: true``); a vision model
  (``pixel_values``) is an ``"image"`` trunk with its image processor's input config, a text
  model a ``"tokens"`` trunk with its tokenizer (:mod:`tlroutes.backbones.pretrained.hf_named`).
- ``module:my_pkg.nets:make_encoder``: any factory returning an ``nn.Module``; its input width and
  feature width are found by :func:`~tlroutes.backbones.pretrained.wrap.wrap_trunk`.
- A plug-in package declares ``[project.entry-points."tlroutes.trunks"] my_trunk =
  "my_pkg.nets:make_encoder"``; ``my_trunk`` is then a trunk name (the factory returns a trunk
  with ``out_dim``, ``input_kind`` and ``in_width``, or any module, which is wrapped).
- ``python:module-<key>``: an ``nn.Module`` given to :func:`tlroutes.fit`, held for the run
  (:mod:`tlroutes.held`); each build is a copy of it.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from torch import nn

from tlroutes.backbones.inputs import InputConfig
from tlroutes.backbones.pretrained.wrap import wrap_trunk
from tlroutes.backbones.registry import INPUT_KINDS, TRUNKS
from tlroutes.errors import ConfigError, did_you_mean, require_extra, shorten
from tlroutes.held import is_held, lookup

#: The entry-point group a plug-in package lists its trunk factories under.
ENTRY_POINT_GROUP = "tlroutes.trunks"


def resolve_trunk(name: str) -> Callable[..., nn.Module] | None:
    """A builder for ``name`` when it is a ``timm:``/``hf:``/``module:`` name or a plug-in's entry
    point; None when it is none of these (the registry then reports an unknown name)."""
    if name.startswith("timm:"):
        return _timm_builder(name[len("timm:"):])
    if name.startswith("module:"):
        return _module_builder(name[len("module:"):])
    if name.startswith("hf:"):
        from tlroutes.backbones.pretrained.hf_named import hf_builder

        return hf_builder(name[len("hf:"):])
    if is_held(name):
        return _held_builder(name)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            return _factory_builder(point.load, f"entry point '{name}' ({point.value})")
    return None


# -- timm ---------------------------------------------------------------------------------------
def _hub_id(arch: str) -> str | None:
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _cached_weights(arch: str) -> str | None:
    """The path of ``arch``'s pretrained weights in the local Hugging Face cache, or None.

    Looked up without any network call, so that an offline machine fails at once with advice
    instead of retrying a download (HF_HOME / HF_HUB_CACHE choose the cache, as for the hub).
    """
    repo = _hub_id(arch)
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return found
    return None


def _timm_builder(arch: str) -> Callable[..., nn.Module]:
    timm = require_extra("timm", "vision", "A timm: trunk")
    if not arch or not timm.models.is_model(arch):
        raise ConfigError(
            f"timm has no model '{shorten(arch)}'.{did_you_mean(arch, timm.list_models())} "
            "List them with `python -c \"import timm; print(timm.list_models('*name*'))\"`.")

    def build(*, pretrained: bool = False, weights: str | None = None, download: bool = False,
              in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0
              ) -> nn.Module:
        """``timm.create_model`` with its classifier removed (``num_classes=0``).

        Args:
            pretrained: start from timm's pretrained weights, read from the local Hugging Face
                cache (never downloaded unless ``download``). Default False (random weights).
            weights: a local ``.safetensors``/``.pth`` file of the model's weights (implies
                pretrained). Default None.
            download: let timm fetch weights missing from the cache from the Hugging Face hub
                (``HF_HUB_OFFLINE=1`` still forbids it). Default False.
            in_chans: input channels. Default 3.
            drop_rate, drop_path_rate: timm's dropout and stochastic depth. Default 0.
        """
        file = str(weights) if weights else (_cached_weights(arch) if pretrained else None)
        if pretrained and file is None and not download:
            raise ConfigError(
                f"timm:{arch}: pretrained weights are not in the local Hugging Face cache "
                f"(looked for {_hub_id(arch) or arch}). On a machine with network, run `python -c "
                f"\"import timm; timm.create_model('{arch}', pretrained=True)\"` and copy its "
                "~/.cache/huggingface/hub folder here (or set HF_HOME to it), or give the file as "
                "`trunk_args: {weights: path/to/model.safetensors}`; `download: true` lets the "
                "run fetch them.")
        try:
            model = timm.create_model(
                arch, pretrained=pretrained or bool(weights), num_classes=0, in_chans=in_chans,
                drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                pretrained_cfg_overlay={"file": file} if file else None)
        except (OSError, RuntimeError, ValueError) as exc:
            if not (pretrained or weights):
                raise
            raise ConfigError(f"timm:{arch}: the weights in {file or 'the hub'} could not be "
                              f"loaded: {shorten(str(exc), 300)}") from exc
        return TimmTrunk(model, arch, in_chans)

    cfg = timm.models.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))[1:]
    build.input_kind = "image"  # type: ignore[attr-defined]
    build.input_config = InputConfig(  # type: ignore[attr-defined]
        size=size, mean=tuple(cfg["mean"]) if "mean" in cfg else None,
        std=tuple(cfg["std"]) if "std" in cfg else None,
        interpolation=cfg.get("interpolation", "bilinear")
        if cfg.get("interpolation") in ("nearest", "bilinear", "bicubic") else "bilinear",
        channels=3, pretrained=True)
    return build


class TimmTrunk(nn.Module):
    """A timm model without its classifier, as an ``"image"`` trunk: ``(B, C, H, W)`` →
    ``(B, num_features)``. The model is ``self.model`` (timm's parameter names)."""

    input_kind = "image"

    def __init__(self, model: nn.Module, arch: str, in_chans: int) -> None:
        super().__init__()
        self.model = model
        self.arch = arch
        self.in_width = int(in_chans)
        # A head with its own hidden layer after pooling (MobileNetV3's conv_head) returns
        # head_hidden_size features, not the trunk's num_features.
        self.out_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)

    def forward(self, x):
        return self.model(x)


# -- a module given as a Python object (tlroutes.fit) --------------------------------------------
def _held_builder(name: str) -> Callable[..., nn.Module]:
    trunk = lookup(name, "model.trunk")
    if not isinstance(trunk, nn.Module) or not hasattr(trunk, "out_dim"):
        raise ConfigError(f"model.trunk: '{name}' holds {type(trunk).__name__}, not a trunk.")

    def build() -> nn.Module:
        """A copy of the trunk given from Python, so that every model built (the run's, the
        from-scratch baseline's) has weights of its own and the caller's module is untouched."""
        return copy.deepcopy(trunk)

    build.input_kind = trunk.input_kind  # type: ignore[attr-defined]
    return build


# -- module factories and entry points ----------------------------------------------------------
def _module_builder(target: str) -> Callable[..., nn.Module]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"module:{shorten(target)} must read 'module:package.module:factory', "
                          "e.g. 'module:my_pkg.nets:make_encoder'.")

    def load() -> Callable[..., Any]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"module:{target}: cannot import '{module_name}' ({exc}); is the "
                              "package installed, or its folder on PYTHONPATH?") from exc
        factory = getattr(module, attr, None)
        if factory is None or not callable(factory):
            names = [n for n in dir(module) if not n.startswith("_")]
            raise ConfigError(f"module:{target}: '{module_name}' has no callable '{attr}'."
                              f"{did_you_mean(attr, names)}")
        return factory

    load()  # an unknown module or factory is reported when the run file is checked
    return _factory_builder(load, f"module:{target}")


def _factory_builder(load: Callable[[], Callable[..., Any]], where: str
                     ) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        factory = load()
        try:
            module = factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{where} cannot be called with {shorten(kwargs, 200)}: "
                              f"{shorten(str(exc), 300)}") from exc
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{where} returned {type(module).__name__}, not a torch "
                              "nn.Module; a trunk factory must return the network.")
        if all(hasattr(module, a) for a in ("out_dim", "input_kind", "in_width")) and \
                module.input_kind in INPUT_KINDS:
            return module
        kind = getattr(module, "input_kind", "image")
        try:
            return wrap_trunk(module, input_kind=kind)
        except ConfigError as exc:
            raise ConfigError(f"{where}: the feature width of what it returned cannot be read "
                              f"({exc}). Give the module out_dim, input_kind and in_width "
                              "attributes.") from exc

    build.__doc__ = f"The trunk made by {where} (keyword arguments go to the factory)."
    return build


TRUNKS.resolvers.append(resolve_trunk)
