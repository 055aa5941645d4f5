"""Checkpoints that survive a kill at any moment, and say so when they are damaged.

Layout of one stage's checkpoint folder::

    <stage>/
      latest.json            -> {"dir": "epoch-0003", "epoch": 3}; replaced atomically, last
      epoch-0002/            the previous checkpoint, kept to fall back to (``keep``, default 2)
      epoch-0003/
        weights.safetensors  trainable module's state (model + objective parameters)
        state.pt             optimizer, scheduler, RNG, epoch, history (tensors and plain types)
        hashes.json          sha256 of the two files above, written with them
      best.safetensors       the weights with the best validation score so far
      final.safetensors      the stage's result (best or last weights), once finished
      done.json              written when the stage finished; holds its result

A checkpoint folder is written under a temporary name and renamed into place, and only then does
``latest.json`` move to it, so an interrupted write leaves the previous checkpoint in charge.
Every file is written atomically (:func:`tlroutes.runfolder.atomic_write`).

Integrity: a checkpoint's files are checked against its ``hashes.json`` before anything is read
from them, and every ``.safetensors`` file tlroutes writes carries the sha256 of its tensors
(names, dtypes, shapes and bytes) in its header's metadata (``tlroutes.sha256``), checked at
load. A damaged file is named; a resume falls back to the newest intact checkpoint
(:func:`resume_checkpoint`), which is why the newest ``keep`` checkpoints are kept. Hashing reads
each file once per write or load: per epoch, never per step.

Weights are never unpickled: safetensors for weights, ``torch.load(weights_only=True)`` for the
rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from tlroutes.backbones.pretrained.weights import describe_differences, state_differences
from tlroutes.errors import CheckpointError
from tlroutes.runfolder import atomic_write, check_no_symlink, fsync_dir, write_json
from tlroutes.runfolder.reads import read_latest, read_model

#: Checkpoints kept per stage (the newest ones): one to resume from and one to fall back to when
#: the newest is damaged. At least 1.
KEEP_CHECKPOINTS = 2

#: The safetensors metadata key holding the tensors' sha256.
HASH_KEY = "tlroutes.sha256"

_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


class DamagedCheckpointError(CheckpointError):
    """A checkpoint or weights file does not match the hash recorded when it was written, or
    cannot be parsed: its bytes changed on disk."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (see :func:`tlroutes.runfolder.write_json`)."""
    write_json(path, data)


def state_for_save(module: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous, de-aliased copy of ``module.state_dict()`` that safetensors accepts."""
    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        out[key] = value.detach().to("cpu", copy=True).contiguous()
    return out


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def weights_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """The safetensors file of ``tensors``, its sha256 in the header's metadata."""
    return save_safetensors(tensors, metadata={HASH_KEY: tensors_sha256(tensors)})


def save_weights_atomic(module: nn.Module, path: Path) -> None:
    """Save ``module``'s weights as safetensors at ``path``, atomically, with their sha256."""
    atomic_write(path, weights_bytes(state_for_save(module)))


def _metadata(data: bytes) -> dict[str, str]:
    # The safetensors header: 8 bytes of little-endian length, then that many bytes of JSON.
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def weights_from_bytes(data: bytes, source: Path | str,
                       verify: bool | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes, checked against their recorded sha256.

    Args:
        data: the file's bytes.
        source: its path, for messages.
        verify: True: the hash must be there and match; None (default): checked when there
            (files tlroutes wrote carry it, a user's pretrained file may not); False: not checked.

    Raises:
        DamagedCheckpointError: unreadable, or the tensors differ from what was written.
    """
    try:
        tensors = load_safetensors(data)
        meta = _metadata(data)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise DamagedCheckpointError(
            f"Cannot read weights {source}: {exc}. The file is damaged.") from None
    recorded = meta.get(HASH_KEY)
    if verify is False or (recorded is None and not verify):
        return tensors
    if recorded is None:
        raise DamagedCheckpointError(f"Weights {source} carry no sha256 (the file is damaged, "
                                     "or was not written by tlroutes).")
    if tensors_sha256(tensors) != recorded:
        raise DamagedCheckpointError(
            f"Weights {source} are damaged: their content does not match the sha256 recorded "
            "when they were written.")
    return tensors


def read_weights(path: Path, verify: bool | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, checked (see :func:`weights_from_bytes`).

    Raises:
        CheckpointError: no such file. DamagedCheckpointError: it is damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No weights file at {path}.")
    return weights_from_bytes(path.read_bytes(), path, verify)


def load_weights(module: nn.Module, path: Path, verify: bool | None = None) -> None:
    """Load safetensors weights into ``module``; damage and mismatched keys or shapes are named.

    Args:
        module: the module to fill.
        path: the file.
        verify: see :func:`weights_from_bytes`. Default None: check the sha256 when recorded.
    """
    saved = read_weights(path, verify)
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


def _epoch_of(path: Path) -> int | None:
    match = _EPOCH_DIR.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def checkpoint_dirs(folder: Path) -> list[Path]:
    """The stage's complete checkpoint folders, newest first."""
    found = [(e, p) for p in folder.glob("epoch-*") if (e := _epoch_of(p)) is not None]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(folder: Path, epoch: int, module: nn.Module, state: dict[str, Any], *,
                    keep: int = KEEP_CHECKPOINTS) -> Path:
    """Write ``epoch``'s checkpoint under ``folder`` and point ``latest.json`` at it.

    ``state`` must hold only tensors and plain Python types (it is read back with
    ``weights_only=True``). After the pointer has moved, only the newest ``keep`` checkpoints
    (this one and the ones before it) stay.

    Args:
        folder: the stage's checkpoint folder.
        epoch: the epoch just finished (from 0).
        module: the trainable module whose weights are saved.
        state: the rest of the training state.
        keep: checkpoints kept, at least 1. Default :data:`KEEP_CHECKPOINTS` (2).
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    check_no_symlink(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    weights = weights_bytes(state_for_save(module))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    state_bytes = buffer.getvalue()
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}."))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a checkpoint is not secret
    # The folder is published by one rename, so its files need no rename of their own: each is
    # written and fsynced, then the folder once (one fsync per file, not two).
    hashes = {
        "weights.safetensors": hashlib.sha256(weights).hexdigest(),
        "state.pt": hashlib.sha256(state_bytes).hexdigest(),
    }
    _write_file(tmp / "weights.safetensors", weights)
    _write_file(tmp / "state.pt", state_bytes)
    _write_file(tmp / "hashes.json", json.dumps(hashes, indent=2).encode())
    fsync_dir(tmp)
    final = folder / name
    check_no_symlink(final)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(folder)
    write_json(folder / "latest.json", {"dir": name, "epoch": epoch})
    kept = [p for p in checkpoint_dirs(folder) if (_epoch_of(p) or 0) <= epoch][:keep]
    for old in checkpoint_dirs(folder):
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)
    for tmp_left in folder.glob(".epoch-*"):
        shutil.rmtree(tmp_left, ignore_errors=True)
    return final


def _write_file(path: Path, data: bytes) -> None:
    """Write a new file in a checkpoint's unpublished folder and fsync it (never through a link:
    ``O_EXCL`` creates it, ``O_NOFOLLOW`` refuses one)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint folder ``latest.json`` points to, or None when there is none yet.

    Raises:
        RunFolderError: ``latest.json`` is damaged. CheckpointError: it points nowhere.
    """
    pointer = folder / "latest.json"
    if not pointer.is_file():
        return None
    target = folder / read_latest(pointer).dir
    if not target.is_dir():
        raise CheckpointError(f"{pointer} points to {target}, which does not exist.")
    return target


def _verified_files(path: Path) -> dict[str, bytes]:
    """The bytes of a checkpoint's files, each checked against its ``hashes.json``."""
    from pydantic import RootModel

    from tlroutes.errors import RunFolderError

    hashes_file = path / "hashes.json"
    if not hashes_file.is_file():
        raise DamagedCheckpointError(f"Checkpoint {path} has no hashes.json (it is damaged, or "
                                     "was written by an older tlroutes).")
    try:
        hashes = read_model(hashes_file, RootModel[dict[str, str]], "hashes.json").root
    except RunFolderError as exc:
        raise DamagedCheckpointError(str(exc)) from None
    out = {}
    for name in ("weights.safetensors", "state.pt"):
        file = path / name
        if name not in hashes:
            raise DamagedCheckpointError(f"{hashes_file} records no hash for {name}.")
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DamagedCheckpointError(f"Cannot read {file}: {exc.strerror or exc}.") from None
        if hashlib.sha256(data).hexdigest() != hashes[name]:
            raise DamagedCheckpointError(
                f"{file} is damaged: its sha256 differs from the one recorded when it was "
                "written.")
        out[name] = data
    return out


def load_checkpoint(path: Path, module: nn.Module) -> dict[str, Any]:
    """Load weights into ``module`` and return the saved state (optimizer, RNG, history …).

    Raises:
        DamagedCheckpointError: a file's bytes differ from their recorded sha256, or are not
            what tlroutes wrote (e.g. a pickle that ``weights_only=True`` refuses).
        CheckpointError: the checkpoint was written for a different model.
    """
    files = _verified_files(path)
    weights = weights_from_bytes(files["weights.safetensors"], path / "weights.safetensors",
                                 verify=True)
    try:
        state = torch.load(io.BytesIO(files["state.pt"]), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DamagedCheckpointError(f"Cannot read {path / 'state.pt'}: {exc}.") from None
    check_compatible(module, weights, path)
    module.load_state_dict(weights, strict=True)
    return state


def resume_checkpoint(folder: Path, module: nn.Module) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest intact checkpoint of a stage into ``module``; None when there is none.

    ``latest.json``'s checkpoint is tried first, then the others newest first. Every damaged one
    (and a damaged ``latest.json``) is named in a warning; when none is intact the error names
    them all and says what to do.

    Returns:
        The checkpoint folder used and its saved state.

    Raises:
        CheckpointError: checkpoints exist but none is intact, or they belong to another model.
    """
    from tlroutes.errors import RunFolderError

    candidates: list[Path] = []
    pointer = folder / "latest.json"
    if pointer.is_file():
        try:
            candidates.append(folder / read_latest(pointer).dir)
        except RunFolderError as exc:
            warnings.warn(f"{exc} Resuming from the newest intact checkpoint instead.",
                          stacklevel=2)
    candidates += [p for p in checkpoint_dirs(folder) if p not in candidates]
    problems = []
    for path in candidates:
        if not path.is_dir():
            problems.append(f"{pointer} points to {path.name}, which does not exist")
            continue
        try:
            state = load_checkpoint(path, module)
        except DamagedCheckpointError as exc:
            problems.append(str(exc).rstrip("."))
            continue
        if problems:
            warnings.warn(f"{'; '.join(problems)}. Resuming from the intact checkpoint "
                          f"{path.name} instead.", stacklevel=2)
        return path, state
    if problems:
        raise CheckpointError(
            f"No intact checkpoint to resume from in {folder}: {'; '.join(problems)}. Delete "
            f"{folder} and resume to train stage '{folder.name}' again from its start (finished "
            "stages are kept), or start a new --out folder.")
    return None


def has_checkpoint(folder: Path) -> bool:
    """Whether a stage has written any checkpoint (its pointer or a checkpoint folder)."""
    return (folder / "latest.json").is_file() or bool(checkpoint_dirs(folder))
