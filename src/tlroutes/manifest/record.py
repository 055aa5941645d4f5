"""What a run records while its route runs, and the manifest written when a model is saved.

The runner opens :func:`recording` around a run; loading a data block
(:func:`tlroutes.data.load.load_problem`, through its ``ON_LOAD`` hooks) calls
:func:`note_problem`, and saving the trained model
(:meth:`tlroutes.train.engine.Trainer.save_model`) calls :func:`note_saved`, which writes
``manifest.json`` beside the weights. Outside a recording (a Trainer driven from a user's own
Python) nothing is written: there is no run file to describe the data by.

The recording is process-wide, not per thread: Parallel Training's jobs save from worker threads
of the one run.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tlroutes.data.load import ON_LOAD
from tlroutes.manifest.describe import NotDescribable, describe_model, task_dict
from tlroutes.manifest.files import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION
from tlroutes.problem import Problem
from tlroutes.runfolder import write_json

#: What every head returns, and therefore every exported graph.
OUTPUTS_NOTE = ("Each head returns raw outputs: logits for classification (softmax gives the "
                "probabilities) and multilabel (sigmoid per label), values for regression.")


@dataclass
class Noted:
    """One data block a route loaded: its role, run-file block, seed and problem."""

    role: str
    spec: dict[str, Any]
    seed: int
    problem: Problem


@dataclass
class Recording:
    """What the runner knows about the run being recorded (see module doc)."""

    route: str
    model_spec: dict[str, Any] | None
    problems: list[Noted] = field(default_factory=list)


_ACTIVE: list[Recording] = []
_LOCK = threading.Lock()


@contextmanager
def recording(*, route: str, model_spec: dict[str, Any] | None = None) -> Iterator[Recording]:
    """Record the data a route loads and write a manifest for each model it saves.

    Args:
        route: the route's registered name.
        model_spec: the run file's ``model`` block, as JSON data, saved as given. Default None.
    """
    rec = Recording(route, model_spec)
    with _LOCK:
        _ACTIVE.append(rec)
    try:
        yield rec
    finally:
        with _LOCK:
            _ACTIVE.remove(rec)


def _active() -> Recording | None:
    with _LOCK:
        return _ACTIVE[-1] if _ACTIVE else None


def note_problem(role: str, spec: Any, seed: int, problem: Problem) -> None:
    """Record a loaded data block (a no-op outside :func:`recording`)."""
    rec = _active()
    if rec is not None:
        data = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
        with _LOCK:  # a later seed's data replaces the earlier seed's of the same role
            rec.problems[:] = [n for n in rec.problems if n.role != role]
            rec.problems.append(Noted(role, data, int(seed), problem))


ON_LOAD.append(note_problem)


def _problem_for(rec: Recording, head: str, task: Any) -> Noted | None:
    """The loaded data block a head serves: the one its role names (``target``, ``source``),
    else the target when its task is the head's (a head shared by source and target, as in
    Domain Adaptation, is used on the target), else the one whose task is this very object,
    else the last one with an equal task, else the target when its task is of the head's kind
    (Domain Adaptation across label sets: the head holds the source's classes, and "unknown"
    for an open-set target, but reads the target's inputs)."""
    def alike(other: Any) -> bool:  # a task's name follows its data; kind and labels decide
        return other.kind == task.kind and other.labels == task.labels

    for role in (head, "target"):
        named = [n for n in rec.problems if n.role == role and alike(n.problem.task)]
        if named:
            return named[-1]
    same = [n for n in rec.problems if n.problem.task is task]
    if same:
        return same[-1]
    equal = [n for n in rec.problems if n.problem.task == task]
    if equal:
        return equal[-1]
    kind = [n for n in rec.problems if n.role == "target" and n.problem.task.kind == task.kind]
    return kind[-1] if kind else None


def _stem_for(model: Any, noted: Noted | None) -> str | None:
    stems = list(model.stems.keys())
    if len(stems) == 1:
        return stems[0]
    if noted is not None:
        for key in stems:
            if model.domains.get(key) == noted.problem.domain:
                return key
    return None


def _preprocessing(noted: Noted) -> dict[str, Any]:
    """How new data becomes the stem's input: the data block's reading fields, and what the
    loading resolved (feature columns, image transforms, tokenizer)."""
    spec = noted.spec
    problem = noted.problem
    out: dict[str, Any] = {
        "role": noted.role, "seed": noted.seed, "data": spec,
        "modality": problem.domain.modality, "input_shape": list(problem.domain.input_shape),
        "dtype": str(problem.test.x.dtype).removeprefix("torch."),
        "label": spec.get("label"), "features": problem.meta.get("features", spec.get("features")),
        "text": spec.get("text"), "text_length": spec.get("text_length"),
        "tokenizer": problem.meta.get("tokenizer"),
    }
    transform = getattr(problem.test.x, "transform", None)
    owner = getattr(transform, "__self__", None)
    if owner is not None and hasattr(owner, "size"):  # ImageTransforms.eval_transform
        out["image_transform"] = {
            "size": list(owner.size), "mode": owner.mode, "interpolation": owner.interpolation,
            "resize": owner.resize, "crop_pct": owner.crop_pct,
            "mean": None if owner.normalization is None else list(owner.normalization[0]),
            "std": None if owner.normalization is None else list(owner.normalization[1]),
        }
    return out


def build_manifest(model: nn.Module, weights: Path, rec: Recording,
                   seed: int | None = None, precision: str = "32-true") -> dict[str, Any]:
    """The manifest of ``model`` saved at ``weights`` during ``rec`` (see the package doc).

    ``precision`` is the run's ``hardware.precision``; the weights are saved in the dtype they
    trained in (``weights_dtype``: float64 under "64-true", bfloat16 under "bf16-true", float32
    otherwise), and :func:`tlroutes.load` predicts in both, as the run evaluated."""
    import torch

    import tlroutes

    try:
        described: dict[str, Any] | None = describe_model(model)
        unbuildable = None
    except NotDescribable as exc:
        described, unbuildable = None, str(exc)
    heads: dict[str, Any] = {}
    for key, task in getattr(model, "tasks", {}).items():
        noted = _problem_for(rec, key, task)
        heads[key] = {"task": task_dict(task), "outputs": task.num_outputs,
                      "stem": _stem_for(model, noted),
                      "problem": None if noted is None else noted.problem.name,
                      "preprocessing": None if noted is None else _preprocessing(noted)}
    return {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "weights": weights.name, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "route": rec.route, "run_seed": seed, "model_spec": rec.model_spec,
        "precision": precision, "weights_dtype": _weights_dtype(model),
        "model": described, "unbuildable": unbuildable, "heads": heads, "outputs": OUTPUTS_NOTE,
        "tlroutes_version": tlroutes.__version__, "torch_version": torch.__version__,
    }


def short_manifest(manifest: dict[str, Any]) -> str:
    """The short JSON that goes into the weights' safetensors metadata."""
    return json.dumps({
        "route": manifest["route"], "outputs": manifest["outputs"],
        "trunk": (manifest["model"] or {}).get("trunk"),
        "heads": {k: {"kind": h["task"]["kind"], "labels": h["task"]["labels"]}
                  for k, h in manifest["heads"].items()},
        "tlroutes_version": manifest["tlroutes_version"],
        "torch_version": manifest["torch_version"],
        "precision": manifest["precision"], "weights_dtype": manifest["weights_dtype"],
    }, sort_keys=True)


def _weights_dtype(model: nn.Module) -> str:
    floating = (p.dtype for p in model.parameters() if p.is_floating_point())
    return str(next(floating, "float32")).removeprefix("torch.")


def note_saved(model: nn.Module, weights: Path, seed: int | None = None, *,
               precision: str = "32-true") -> None:
    """Write ``manifest.json`` beside ``weights`` (a no-op outside :func:`recording`);
    ``seed`` is the run seed the model was trained with (default None: not known),
    ``precision`` the run's ``hardware.precision`` (default ``"32-true"``)."""
    rec = _active()
    if rec is None:
        return
    from tlroutes.manifest.weights import add_metadata

    manifest = build_manifest(model, weights, rec, seed, precision)
    add_metadata(weights, {"tlroutes.manifest": short_manifest(manifest)})
    manifest["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    write_json(weights.parent / MANIFEST_FILE, manifest)
