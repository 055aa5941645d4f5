"""Checkpoints that survive a kill at any moment.

Layout of one stage's checkpoint folder::

    <stage>/
      latest.json            -> {"dir": "epoch-0003"}; replaced atomically, written last
      epoch-0003/
        weights.safetensors  trainable module's state (model + objective parameters)
        state.pt             optimizer, scheduler, RNG, epoch, history (tensors and plain types)
      best.safetensors       the weights with the best validation score so far
      done.json              written when the stage finished; holds its result

A checkpoint directory is written under a temporary name and renamed into place, and only then
does ``latest.json`` move to it, so an interrupted write leaves the previous checkpoint in charge.
Weights are never unpickled: safetensors for weights, ``torch.load(weights_only=True)`` for
the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tlroutes.backbones.pretrained.weights import describe_differences, state_differences
from tlroutes.errors import CheckpointError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def state_for_save(module: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous, de-aliased copy of ``module.state_dict()`` that safetensors accepts."""
    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        out[key] = value.detach().to("cpu", copy=True).contiguous()
    return out


def save_weights_atomic(module: nn.Module, path: Path) -> None:
    """Save ``module``'s weights as safetensors at ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    save_file(state_for_save(module), tmp)
    _fsync_file(tmp)
    os.replace(tmp, path)


def load_weights(module: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``module``; mismatched keys or shapes are named."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No weights file at {path}.")
    try:
        saved = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"Cannot read weights {path}: {exc}. The file is damaged.") from exc
    check_compatible(module, saved, path)
    module.load_state_dict(saved, strict=True)


def check_compatible(module: nn.Module, saved: dict[str, torch.Tensor], source: Path | str) -> None:
    """Raise :class:`CheckpointError` naming every key that differs between checkpoint and model."""
    differences = state_differences(module.state_dict(), saved, "checkpoint")
    if not any(differences.values()):
        return
    raise CheckpointError(
        f"Checkpoint {source} was written for a different model "
        f"({describe_differences(differences, 'checkpoint', n=5)}). "
        "Resume with the run file that produced it, or start a new run folder."
    )


def save_checkpoint(folder: Path, epoch: int, module: nn.Module, state: dict[str, Any]) -> Path:
    """Write ``epoch``'s checkpoint under ``folder`` and point ``latest.json`` at it.

    ``state`` must hold only tensors and plain Python types (it is read back with
    ``weights_only=True``). Older epoch folders are removed after the pointer has moved.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}."))
    save_file(state_for_save(module), str(tmp / "weights.safetensors"))
    _fsync_file(tmp / "weights.safetensors")
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    final = folder / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(folder)
    write_json_atomic(folder / "latest.json", {"dir": name, "epoch": epoch})
    for old in folder.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    for tmp_left in folder.glob(".epoch-*"):
        shutil.rmtree(tmp_left, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint folder ``latest.json`` points to, or None when there is none yet."""
    pointer = folder / "latest.json"
    if not pointer.is_file():
        return None
    try:
        target = folder / json.loads(pointer.read_text())["dir"]
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{pointer} is damaged ({exc}); delete it to start over.") from exc
    if not target.is_dir():
        raise CheckpointError(f"{pointer} points to {target}, which does not exist.")
    return target


def load_checkpoint(path: Path, module: nn.Module) -> dict[str, Any]:
    """Load weights into ``module`` and return the saved state (optimizer, RNG, history …)."""
    load_weights(module, path / "weights.safetensors")
    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"Cannot read {path / 'state.pt'}: {exc}.") from exc
