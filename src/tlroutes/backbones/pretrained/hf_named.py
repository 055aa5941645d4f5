"""``hf:<folder or hub id>`` trunks: any transformers model, vision or text, by where it lies.

- A **vision** model (its main input is ``pixel_values``: ViT, ConvNeXt, ResNet …) is an
  ``"image"`` trunk (:class:`~tlroutes.backbones.pretrained.hf_vision.HFImageTrunk`); its image
  processor's size, mean, std and resampling (``preprocessor_config.json``) are the trunk's
  :class:`~tlroutes.backbones.inputs.InputConfig`, so image transforms and the default stem
  prepare images as the model was trained on them.
- A **text** model (``input_ids``) is a ``"tokens"`` trunk
  (:class:`~tlroutes.backbones.pretrained.hf.HFTokensTrunk`, as the ``hf`` trunk), and a table's
  ``text:`` column is tokenised with the model's own tokenizer.

The feature width is read from the model's config (``hidden_sizes[-1]`` or ``hidden_size``).
The model is looked for, in turn, as a local folder (``save_pretrained()``'s output) and as a
repository in the local Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``); both read with
``local_files_only=True`` and ``trust_remote_code=False``. The hub is asked only with
``trunk_args: {download: true}`` (and never under ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from tlroutes.backbones.pretrained.hf import (
    _load_hf,
    _quiet_transformers,
    _tokenize,
    hf_trunk,
)
from tlroutes.backbones.pretrained.hf_vision import (
    HFImageTrunk,
    drop_learned_pooler,
    processor_input_config,
    vision_width,
)
from tlroutes.errors import ConfigError, did_you_mean, require_extra, shorten

__all__ = ["hf_builder", "hf_tokenizer_for", "locate_hf"]

#: What a hub repository id looks like ('name' or 'owner/name'); anything else is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached_repos() -> list[str]:
    cache = _hub_cache()
    if not cache.is_dir():
        return []
    return sorted(p.name[len("models--"):].replace("--", "/")
                  for p in cache.glob("models--*") if p.is_dir())


def _cached_snapshot(repo: str) -> Path | None:
    if not _HUB_ID.match(repo):
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True, cache_dir=_hub_cache()))
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), or not an id
        return None


def _near_misses(ref: str) -> str:
    """Local model folders beside ``ref`` and cached repositories whose names are close."""
    path = Path(ref).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    folders = []
    if parent.is_dir():
        try:
            folders = [str(parent / p.name) if str(path.parent) != "." else p.name
                       for p in parent.iterdir() if (p / "config.json").is_file()]
        except OSError:
            folders = []
    return did_you_mean(ref, folders + _cached_repos())


def _missing(ref: str) -> ConfigError:
    repos = _cached_repos()
    listed = (f" Cached repositories: {', '.join(repos[:10])}." if repos
              else f" The cache ({_hub_cache()}) holds no models.")
    return ConfigError(
        f"hf:{shorten(ref)}: no model folder at {Path(ref).expanduser()} and no repository "
        f"'{shorten(ref)}' in the local Hugging Face cache.{_near_misses(ref)}{listed} Give the "
        "folder written by save_pretrained() (config.json and the weights), place the repository "
        "in the cache (run `huggingface-cli download <id>` on a machine with network and copy "
        "its hub folder here, or set HF_HOME to it), or let the run fetch it with "
        "`trunk_args: {download: true}`.")


def locate_hf(ref: str, *, download: bool = False) -> Path:
    """The local folder of the model ``ref`` names: a folder, a cached hub repository's
    snapshot, or (``download=True``, not under ``HF_HUB_OFFLINE=1``) the repository fetched
    from the hub into the cache.

    Raises:
        ConfigError: none of these, with near misses among local folders and cached repos.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"hf:{ref}: {path} has no config.json; give the folder written by "
                              "save_pretrained() (config.json, the weights, and the tokenizer "
                              "or image processor files).")
        return path
    cached = _cached_snapshot(ref)
    if cached is not None and (cached / "config.json").is_file():
        return cached
    if download and _HUB_ID.match(ref):
        if _offline():
            raise ConfigError(f"hf:{ref}: download: true, but HF_HUB_OFFLINE is set; unset it, "
                              "or place the repository in the local cache.")
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(ref, cache_dir=_hub_cache()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"hf:{ref}: the hub download failed: "
                              f"{shorten(str(exc), 300)}") from exc
    raise _missing(ref)


def _read_config(folder: Path, ref: str) -> Any:
    transformers = require_extra("transformers", "hf", f"The hf:{ref} trunk")
    with _quiet_transformers(transformers):
        try:
            return transformers.AutoConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"hf:{ref}: the config.json in {folder} cannot be read by "
                              f"transformers: {shorten(str(exc), 300)}") from exc


def _input_kind(config: Any, ref: str) -> str:
    """``"image"`` for a model whose main input is ``pixel_values``, ``"tokens"`` for
    ``input_ids``; read from the model class transformers maps the config to."""
    import transformers

    try:
        cls = transformers.MODEL_MAPPING[type(config)]
    except KeyError as exc:
        raise ConfigError(f"hf:{ref}: transformers has no base model (AutoModel) for "
                          f"'{getattr(config, 'model_type', type(config).__name__)}'.") from exc
    main = getattr(cls, "main_input_name", "input_ids")
    if main == "pixel_values":
        return "image"
    if main == "input_ids":
        return "tokens"
    raise ConfigError(f"hf:{ref}: {cls.__name__} reads '{main}', neither images (pixel_values) "
                      "nor text (input_ids); it cannot be a trunk here.")


def hf_builder(ref: str) -> Callable[..., nn.Module]:
    """The trunk builder for ``hf:<ref>``.

    A model found locally is inspected now (its kind and, for vision, its input config, which
    the image transforms read before the trunk is built); a hub id not yet cached is looked
    up when built, which fetches it only with ``download=True``.

    Raises:
        ConfigError: ``ref`` is empty, or neither a local folder, a cached repository nor a
            hub id (with near misses).
    """
    if not ref:
        raise ConfigError("hf: needs a folder or a hub id, e.g. 'hf:models/my-vit' or "
                          "'hf:google/vit-base-patch16-224'.")
    try:
        folder: Path | None = locate_hf(ref)
    except ConfigError:
        if not _HUB_ID.match(ref) or _offline():  # a path, or a hub that cannot be asked
            raise
        folder = None
    kind = config = None
    if folder is not None:
        config = _read_config(folder, ref)
        kind = _input_kind(config, ref)

    def build(*, pretrained: bool = True, download: bool = False,
              pool: str | None = None) -> nn.Module:
        """A transformers model as a trunk (see :mod:`tlroutes.backbones.pretrained.hf_named`).

        Args:
            pretrained: load the weights; False builds the architecture from ``config.json``
                with a random init. Default True.
            download: fetch a hub repository missing from the local cache (not under
                ``HF_HUB_OFFLINE=1``). Default False: local files only.
            pool: how token outputs become one feature vector: vision ``"cls"`` (default,
                the class token) or ``"mean"``; text ``"mean"`` (default), ``"cls"`` or
                ``"last"``. A CNN's own pooled output is used whatever ``pool`` says.
        """
        where = folder if folder is not None else locate_hf(ref, download=download)
        cfg = config if config is not None else _read_config(where, ref)
        if (kind or _input_kind(cfg, ref)) == "tokens":
            return hf_trunk(where, pool=pool or "mean", pretrained=pretrained)
        model = _load_hf(where, pretrained, "hf", f"The hf:{ref} trunk")
        drop_learned_pooler(model)
        return HFImageTrunk(model, out_dim=vision_width(cfg),
                            input_config=processor_input_config(where, cfg), pool=pool or "cls")

    if kind is not None:
        build.input_kind = kind  # type: ignore[attr-defined]
    if kind == "image":
        build.input_config = processor_input_config(folder, config)  # type: ignore[attr-defined]
    return build


def hf_tokenizer_for(trunk: str) -> Callable[[list[str], int], Tensor] | None:
    """The tokenizer of an ``hf:`` text trunk (ids padded or cut to a length), or None for
    any other trunk name."""
    if not trunk.startswith("hf:"):
        return None
    folder = locate_hf(trunk[len("hf:"):])
    return lambda texts, length: _tokenize(folder, texts, length, "hf")
