"""The manifest's ``model`` block as a model again, with the run's trained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlroutes.backbones import create_head
from tlroutes.backbones.registry import STEMS, TRUNKS
from tlroutes.backbones.sharing import create_sharing
from tlroutes.errors import ConfigError
from tlroutes.manifest.describe import domain_from, task_from
from tlroutes.model import TransferModel


def rebuild_model(manifest: dict[str, Any], folder: str | Path, *,
                  weights: bool = True) -> TransferModel:
    """The model ``manifest`` describes, in eval mode, with ``folder``'s weights loaded.

    Args:
        manifest: a manifest (:func:`tlroutes.manifest.read_manifest`).
        folder: the folder holding the manifest and the weights file it names.
        weights: load the trained weights. Default True (False: the bare architecture).

    Raises:
        ConfigError: the manifest says the model cannot be rebuilt (why is named).
        CheckpointError: the weights do not fit the rebuilt model, or are damaged.
    """
    from tlroutes.train.checkpoint import load_weights

    m = manifest.get("model")
    if m is None:
        raise ConfigError(
            f"The model in {folder} cannot be rebuilt from its manifest: "
            f"{manifest.get('unbuildable') or 'no model block'}. Only models assembled from "
            "registered trunks, stems and heads can be loaded from a run folder.")
    t = m["trunk"]
    if t.get("sharing"):  # a multi-task architecture (MMoE, PLE, ...) over copies of the trunk
        s = t["sharing"]
        trunk = create_sharing(s["name"], lambda: TRUNKS.build(t["factory"], **t["args"]),
                               s["tasks"], **s["args"])
    else:
        trunk = TRUNKS.build(t["factory"], **t["args"])
    stems, domains = {}, {}
    for key, s in m["stems"].items():
        domains[key] = domain_from(s["domain"])
        stems[key] = STEMS.build(s["factory"], domains[key], trunk.in_width, **s["args"])
    heads, tasks = {}, {}
    for key, h in m["heads"].items():
        tasks[key] = task_from(h["task"])
        heads[key] = create_head(tasks[key], trunk.out_dim, hidden=h["hidden"],
                                 dropout=h["dropout"])
    model = TransferModel(stems, trunk, heads, domains=domains, tasks=tasks)
    lora = m.get("lora")
    if lora is not None:
        from tlroutes.lora import apply_lora

        apply_lora(model, r=lora["r"], alpha=lora["alpha"], target_modules=lora["targets"],
                   trainable=())
    if weights:
        load_weights(model, Path(folder) / manifest["weights"])
    return model.eval()
