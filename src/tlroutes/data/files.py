"""User data from files: one ``.npz`` archive per problem.

The archive holds ``x_train, y_train, x_val, y_val, x_test, y_test`` and, optionally, ``labels``
(label or target names). Inputs are float arrays ``(N, *sample_shape)``; targets follow the
conventions of :mod:`tlroutes.problem`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from tlroutes.errors import DataError
from tlroutes.problem import TASK_KINDS, Domain, Problem, Split, Task

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def load_npz(
    path: str | Path, kind: str = "classification", modality: str | None = None
) -> Problem:
    """Load a :class:`Problem` from an ``.npz`` file and validate it.

    Args:
        path: the archive.
        kind: the task kind: ``"classification"`` (default), ``"multilabel"`` or
            ``"regression"``.
        modality: ``"image"``, ``"signal"``, ``"tabular"`` or ``"text"``; None (default) infers
            it from the sample shape: 3-D image, 2-D signal, 1-D tabular.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist.")
    if kind not in TASK_KINDS:
        raise DataError(
            f"{path}: task kind '{kind}' is unknown; use one of {', '.join(TASK_KINDS)}."
        )
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"Cannot read {path} as an .npz archive: {exc}") from exc
    missing = [k for k in SPLIT_KEYS if k not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks array(s) {', '.join(missing)}; it needs {', '.join(SPLIT_KEYS)}."
        )
    splits = {}
    for name in ("train", "val", "test"):
        x = torch.as_tensor(arrays[f"x_{name}"])
        y = torch.as_tensor(arrays[f"y_{name}"])
        x = x if modality == "text" else x.float()
        y = y.long() if kind == "classification" else y.float()
        if kind != "classification" and y.dim() == 1:
            y = y[:, None]
        splits[name] = Split(x, y)
    shape = tuple(splits["train"].x.shape[1:])
    if modality is None:
        inferred = {3: "image", 2: "signal", 1: "tabular"}.get(len(shape))
        if inferred is None:
            raise DataError(
                f"{path}: samples of shape {shape} fit no modality; set `modality` in the run "
                "file (image: C×H×W, signal: C×L, tabular: D)."
            )
        modality = inferred
    labels = _labels(arrays, kind, splits)
    task = Task(kind, labels, name=path.stem)
    domain = Domain(path.stem, modality, shape)
    return Problem(path.stem, task, domain, splits["train"], splits["val"], splits["test"],
                   meta={"file": str(path)}).validate()


def _labels(arrays: dict, kind: str, splits: dict[str, Split]) -> tuple[str, ...]:
    if "labels" in arrays:
        return tuple(str(v) for v in arrays["labels"].tolist())
    if kind == "classification":
        top = int(splits["train"].y.max()) if len(splits["train"]) else 0
        return tuple(str(i) for i in range(max(top + 1, 2)))
    width = splits["train"].y.shape[1]
    return tuple(f"y{i}" for i in range(width))
