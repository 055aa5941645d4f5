"""Python objects that a run names by key: ``python:<kind>-<key>``.

A run file is text, so data and networks that exist only as Python objects (numpy arrays, a
DataFrame, a ``torch`` Dataset, a :class:`~tlroutes.problem.Problem`, an ``nn.Module``) are held
here and named in the run file by a key: ``source: {dataset: python:arrays-3f2a…}``,
``model: {trunk: python:module-9c1e…}``. :func:`tlroutes.fit` holds them and runs the same
runner as ``tlroutes run``; the data sources (:mod:`tlroutes.data.sources.held`) and the trunk
registry (:mod:`tlroutes.backbones.named`) look them up.

The key of arrays, a DataFrame, an in-memory Problem and a module is a hash of the content
(values, shapes, dtypes, column names; a module's class and weights), so the saved ``run.yaml``
says the data came from Python, and the same objects given again — in this process or a new one
— have the same name, which is what lets a run be resumed (``run.yaml`` must match). A torch
Dataset or a lazily read Problem is named by its type, length and identity instead: it resumes
only in the process that started the run.

Limits: the store lives in this process only (another process, e.g. ``tlroutes report`` or
``tlroutes run --resume`` from a shell, cannot read the data); objects stay referenced until
:func:`release` (or the process ends).
"""

from __future__ import annotations

import hashlib
from typing import Any

from tlroutes.errors import ConfigError

__all__ = ["PREFIX", "content_key", "hold", "is_held", "lookup", "release"]

#: The prefix of a held object's name in a run file.
PREFIX = "python:"

_HELD: dict[str, Any] = {}


def hold(obj: Any, *, kind: str, key: str) -> str:
    """Hold ``obj`` and return its name, ``python:<kind>-<key>``."""
    name = f"{PREFIX}{kind}-{key}"
    _HELD[name] = obj
    return name


def is_held(name: object) -> bool:
    """True when ``name`` is a held object's name (whether or not it is held now)."""
    return isinstance(name, str) and name.startswith(PREFIX)


def lookup(name: str, where: str) -> Any:
    """The object held as ``name``.

    Raises:
        ConfigError: nothing is held under ``name`` in this process (``where`` says which
            field named it).
    """
    if name not in _HELD:
        raise ConfigError(
            f"{where}: '{name}' names a Python object that this process does not hold: the run "
            "was started from Python (tlroutes.fit) with data or a model given as objects, which "
            "a run file cannot carry. Call tlroutes.fit again with the same objects (resume=True "
            "continues the run: arrays, DataFrames and modules are named by their content), or "
            "save the data to a file (.npz, .csv, .parquet) and name the file instead.")
    return _HELD[name]


def release(name: str | None = None) -> None:
    """Stop holding ``name`` (every object when None), so that its memory can be freed."""
    if name is None:
        _HELD.clear()
    else:
        _HELD.pop(name, None)


def content_key(*parts: Any) -> str:
    """A 16-hex-digit digest of ``parts``: tensors and arrays by dtype, shape and bytes; other
    values by their ``repr``."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        _feed(digest, part)
    return digest.hexdigest()


def _feed(digest: Any, part: Any) -> None:
    import numpy as np

    if hasattr(part, "detach") and hasattr(part, "cpu"):  # a torch tensor
        part = part.detach().cpu()
        digest.update(f"tensor{part.dtype}{tuple(part.shape)}".encode())
        digest.update(part.contiguous().view(-1).view(dtype=_byte_dtype()).numpy().tobytes()
                      if part.numel() else b"")
    elif isinstance(part, np.ndarray):
        digest.update(f"array{part.dtype}{part.shape}".encode())
        digest.update(np.ascontiguousarray(part).tobytes() if part.dtype.kind != "O"
                      else repr(part.tolist()).encode())
    elif isinstance(part, list | tuple):
        digest.update(f"seq{len(part)}".encode())
        for item in part:
            _feed(digest, item)
    else:
        digest.update(repr(part).encode())


def _byte_dtype() -> Any:
    import torch

    return torch.uint8
