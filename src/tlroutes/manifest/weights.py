"""The manifest's short JSON in the weights file's safetensors metadata."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from tlroutes.runfolder import atomic_write


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors metadata of ``path`` (``{}`` when it has none)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def add_metadata(path: Path, extra: dict[str, str]) -> None:
    """Rewrite ``path`` atomically with ``extra`` added to its metadata; the tensors, and so
    their recorded sha256 (``tlroutes.sha256``), stay as they are."""
    data = path.read_bytes()
    tensors = load_safetensors(data)
    atomic_write(path, save_safetensors(tensors, metadata={**read_metadata(path), **extra}))
