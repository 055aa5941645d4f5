"""``.npz`` archives as problems.

An archive holds either pre-made splits — ``x_train, x_val, x_test`` with ``y_train, y_val,
y_test`` — or one unsplit ``x`` with its ``y``, which is split automatically
(:mod:`~tlroutes.data.sources.splitting`). Optional ``labels``: the class names in id order (or
the target names of a regression). Leaving every ``y`` out makes an unlabelled problem (see
:mod:`~tlroutes.data.sources.build`).

Labels may be integers or strings (mapped to ids, names kept); real-valued targets need
``task: regression``. The archive is read with ``allow_pickle=False``: an array of Python objects
is refused, never unpickled (unpickling runs code).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlroutes.data.sources.build import SourceOptions, build_problem
from tlroutes.errors import DataError
from tlroutes.problem import Problem

__all__ = ["PRESPLIT_KEYS", "npz_problem", "read_npz"]

PRESPLIT_KEYS = ("x_train", "x_val", "x_test")


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the archive at ``path``, without unpickling anything.

    Raises:
        DataError: the file is missing or not an archive, or an array holds Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist.")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise DataError(
                        f"{path}: array '{key}' holds Python objects (dtype=object), which "
                        "tlroutes never loads: unpickling can run code. Save numbers, or labels "
                        "as a string array (np.asarray(labels, dtype=str)).") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"Cannot read {path} as an .npz archive: {exc}") from exc
    return arrays


def _inputs(array: np.ndarray, key: str, modality: str | None, path: Path) -> torch.Tensor:
    if np.iscomplexobj(array):
        raise DataError(f"{path}: {key} holds complex numbers; tlroutes learns from real values. "
                        "Split them into real and imaginary channels first.")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key} holds {array.dtype} values; inputs must be numbers.")
    tensor = torch.as_tensor(array)
    return tensor.long() if modality == "text" else tensor.float()


def npz_problem(
    path: str | Path, options: SourceOptions, *, key: str, source: Mapping[str, Any]
) -> Problem:
    """A :class:`Problem` from the archive at ``path`` (see module doc)."""
    path = Path(path)
    arrays = read_npz(path)
    presplit = [k for k in PRESPLIT_KEYS if k in arrays]
    if presplit:
        missing = [k for k in PRESPLIT_KEYS if k not in arrays]
        if missing:
            raise DataError(f"{path} has {', '.join(presplit)} but lacks {', '.join(missing)}; "
                            "give all three splits, or one unsplit `x` (split automatically).")
        names = ("train", "val", "test")
        ys = [f"y_{s}" for s in names]
        have = [k for k in ys if k in arrays]
        if have and len(have) < 3:
            raise DataError(f"{path} has {', '.join(have)} but lacks "
                            f"{', '.join(k for k in ys if k not in arrays)}; label every split, "
                            "or none (an unlabelled problem).")
        xs = [_inputs(arrays[f"x_{s}"], f"x_{s}", options.modality, path) for s in names]
        for s, x, k in zip(names, xs, ys, strict=True):
            if k in arrays and len(arrays[k]) != len(x):
                raise DataError(f"{path}: x_{s} has {len(x)} samples but {k} has "
                                f"{len(arrays[k])}.")
        shapes = {tuple(x.shape[1:]) for x in xs}
        if len(shapes) > 1:
            raise DataError(f"{path}: the splits' samples differ in shape ({sorted(shapes)}); "
                            "every sample needs the same shape.")
        x = torch.cat(xs)
        kinds = {k: "text" if arrays[k].dtype.kind in "US" else "numbers" for k in have}
        if len(set(kinds.values())) > 1:
            # concatenated, numbers would silently become text ("1" beside "cat")
            shown = ", ".join(f"{k} holds {v} ({arrays[k].dtype})" for k, v in kinds.items())
            raise DataError(f"{path}: the splits' labels mix types — {shown}. Give every split "
                            "the same kind of label: all class names or all class ids.")
        y = np.concatenate([arrays[k] for k in ys]) if have else None
        split_of = np.repeat(np.array(names, dtype=object), [len(t) for t in xs])
    else:
        if "x" not in arrays:
            raise DataError(f"{path} holds {', '.join(sorted(arrays)) or 'no arrays'}; it needs "
                            "x_train, y_train, x_val, y_val, x_test, y_test (pre-split) or x "
                            "and y (split automatically).")
        x = _inputs(arrays["x"], "x", options.modality, path)
        y = arrays.get("y")
        if y is not None and len(y) != len(x):
            raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}.")
        split_of = None
    if y is not None and np.iscomplexobj(y):
        raise DataError(f"{path}: y holds complex numbers; targets must be real.")
    if options.labels is None and "labels" in arrays:
        options.labels = [str(v) for v in np.atleast_1d(arrays["labels"]).tolist()]
    if y is not None and y.ndim == 2 and y.shape[1] == 1 and options.task != "regression":
        y = y[:, 0]
    if y is None:
        options.meta.setdefault("unlabelled_because", "the archive has no y arrays")
    return build_problem(path.stem, x, y, options, where=str(path), key=key, source=source,
                         split_of=split_of)
