"""Built-in trunks, stems and heads, with a registry and factories (in the manner of timm).

Example::

    from tlroutes.backbones import create_head, create_stem, create_trunk

    trunk = create_trunk("cnn2d", channels=(16, 32))
    stem = create_stem(domain, trunk)  # the adapter for (domain.modality, trunk.input_kind)
    head = create_head(task, trunk.out_dim)
"""

# Registers the pretrained trunks and their stems; their packages are imported only when built.
from tlroutes.backbones import named, pretrained  # noqa: F401
from tlroutes.backbones.heads import create_head
from tlroutes.backbones.registry import (
    INPUT_KINDS,
    check_trunk,
    create_trunk,
    list_stems,
    list_trunks,
    register_stem,
    register_trunk,
)
from tlroutes.backbones.stems import Stem, create_stem, stems_for, trunks_for
from tlroutes.backbones.trunks import CNN1dTrunk, CNN2dTrunk, MLPTrunk, TransformerTrunk

__all__ = [
    "INPUT_KINDS",
    "CNN1dTrunk",
    "CNN2dTrunk",
    "MLPTrunk",
    "Stem",
    "TransformerTrunk",
    "check_trunk",
    "create_head",
    "create_stem",
    "create_trunk",
    "list_stems",
    "list_trunks",
    "register_stem",
    "register_trunk",
    "stems_for",
    "trunks_for",
]
