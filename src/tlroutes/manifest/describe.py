"""A live :class:`~tlroutes.model.TransferModel` as the manifest's ``model`` block.

Every trunk and stem built through the registries remembers its factory call
(``tlroutes_factory``: registry, name, keyword arguments); heads are read from their layers
(:func:`tlroutes.backbones.create_head` makes a ``Linear`` or a ``Sequential`` of ``fc``,
``act``, ``drop``, ``out``); LoRA layers from PEFT's own attributes. A part built any other way
(a module handed in from Python, a route's own wrapper) cannot be rebuilt from a file:
:class:`NotDescribable` names it.
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from tlroutes.backbones.sharing import SHARINGS, TaskSharing
from tlroutes.model import TransferModel
from tlroutes.problem import Domain, Task

#: Trunk arguments that fetch pretrained weights: the manifest's weights replace them, so a
#: rebuild never downloads or reads a cache.
WEIGHT_ARGS: tuple[str, ...] = ("pretrained", "weights", "download")


class NotDescribable(Exception):
    """A part of the model that the manifest cannot rebuild (the message names it)."""


def _jsonable(args: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(args))
    except (TypeError, ValueError):
        raise NotDescribable(f"{where} was built with arguments that are not plain data "
                             f"({', '.join(sorted(args))})") from None


def _factory(module: nn.Module, registry: str, where: str) -> dict[str, Any]:
    record = module.__dict__.get("tlroutes_factory")
    if record is None or record[0] != registry:
        raise NotDescribable(f"{where} ({type(module).__name__}) was not built from the "
                             f"{registry} registry")
    return {"factory": record[1], "args": _jsonable(record[2], where)}


def domain_dict(domain: Domain) -> dict[str, Any]:
    """A :class:`Domain` as JSON-ready data (see :func:`domain_from`)."""
    return {"name": domain.name, "modality": domain.modality,
            "input_shape": list(domain.input_shape),
            "normalization": None if domain.normalization is None
            else [list(domain.normalization[0]), list(domain.normalization[1])]}


def domain_from(data: dict[str, Any]) -> Domain:
    """The :class:`Domain` of :func:`domain_dict`'s data."""
    norm = data.get("normalization")
    return Domain(data["name"], data["modality"], tuple(data["input_shape"]),
                  normalization=None if norm is None else (tuple(norm[0]), tuple(norm[1])))


def task_dict(task: Task) -> dict[str, Any]:
    """A :class:`Task` as JSON-ready data (see :func:`task_from`)."""
    return {"name": task.name, "kind": task.kind, "labels": list(task.labels)}


def task_from(data: dict[str, Any]) -> Task:
    """The :class:`Task` of :func:`task_dict`'s data."""
    return Task(data["kind"], tuple(data["labels"]), data["name"])


def _head_layout(head: nn.Module, where: str) -> dict[str, Any]:
    if type(head) is nn.Linear:
        return {"hidden": None, "dropout": 0.0}
    if type(head) is nn.Sequential and isinstance(getattr(head, "out", None), nn.Linear):
        names = [n for n, _ in head.named_children()]
        if set(names) <= {"fc", "act", "drop", "out"}:
            fc, drop = getattr(head, "fc", None), getattr(head, "drop", None)
            return {"hidden": None if fc is None else int(fc.out_features),
                    "dropout": 0.0 if drop is None else float(drop.p)}
    raise NotDescribable(f"{where} ({type(head).__name__}) is not a head create_head() builds")


def _lora(model: nn.Module) -> dict[str, Any] | None:
    layers = [(n, m) for n, m in model.named_modules()
              if n and hasattr(m, "lora_A") and hasattr(m, "get_base_layer")]
    if not layers:
        return None
    first = layers[0][1]
    adapter = next(iter(first.r))
    return {"r": int(first.r[adapter]), "alpha": float(first.lora_alpha[adapter]),
            "targets": [n for n, _ in layers]}


def describe_model(model: nn.Module) -> dict[str, Any]:
    """The manifest's ``model`` block of ``model``.

    Raises:
        NotDescribable: ``model`` is not a :class:`TransferModel`, or one of its parts was not
            built by the registries (the message names the part).
    """
    if not isinstance(model, TransferModel):
        raise NotDescribable(f"the model is a {type(model).__name__}, not a TransferModel")
    sharing = None
    if isinstance(model.trunk, TaskSharing):  # a multi-task architecture over trunk copies
        sharing = _factory(model.trunk, SHARINGS.what, "the multi-task architecture")
        sharing = {"name": sharing["factory"], "args": sharing["args"],
                   "tasks": list(model.trunk.tasks)}
    trunk = _factory(model.trunk.reference_trunk() if sharing else model.trunk, "trunk",
                     "the trunk")
    trunk["args"] = {k: v for k, v in trunk["args"].items() if k not in WEIGHT_ARGS}
    if sharing:
        trunk["sharing"] = sharing
    stems = {}
    for key, stem in model.stems.items():
        if key not in model.domains:
            raise NotDescribable(f"stem '{key}' has no domain recorded")
        stems[key] = {**_factory(stem, "stem", f"stem '{key}'"),
                      "domain": domain_dict(model.domains[key])}
    heads = {}
    for key, head in model.heads.items():
        if key not in model.tasks:
            raise NotDescribable(f"head '{key}' has no task recorded")
        task = model.tasks[key]
        heads[key] = {"task": task_dict(task), "outputs": task.num_outputs,
                      **_head_layout(head, f"head '{key}'")}
    return {"trunk": trunk, "stems": stems, "heads": heads, "lora": _lora(model),
            "feature_width": int(model.trunk.out_dim)}
