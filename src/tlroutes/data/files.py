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
        x = torch.as_tensor(_numeric(arrays[f"x_{name}"], f"x_{name}", path))
        y_array = _numeric(arrays[f"y_{name}"], f"y_{name}", path)
        if kind == "classification":
            y_array = _class_labels(y_array, name, path)
        y = torch.as_tensor(y_array)
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
    labels = _labels(arrays, kind, splits, path)
    task = Task(kind, labels, name=path.stem)
    domain = Domain(path.stem, modality, shape)
    return Problem(path.stem, task, domain, splits["train"], splits["val"], splits["test"],
                   meta={"file": str(path)}).validate()


def _numeric(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``array`` when it holds real numbers (bool, int, float); else a :class:`DataError`.

    Complex values would lose their imaginary part when cast to float, silently; strings and
    other kinds cannot be a tensor at all.
    """
    if np.iscomplexobj(array):
        raise DataError(f"{path}: {key} holds complex numbers; tlroutes learns from real "
                        "values. Split them into real and imaginary channels first.")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key} holds {array.dtype} values; it must hold numbers "
                        "(integers or floats).")
    return array


def _class_labels(y: np.ndarray, split: str, path: Path) -> np.ndarray:
    """Classification labels as integers; float labels only when each is a whole number.

    Casting would truncate 2.7 to class 2 and turn NaN into -9223372036854775808, silently.
    """
    if y.dtype.kind != "f":
        return y
    finite = np.isfinite(y)
    if not finite.all():
        raise DataError(f"{path}: the {split} split has {int((~finite).sum())} label(s) that "
                        "are NaN or infinite; a class label must be a whole number.")
    # Beyond 2**31 no label is a class index (and int64 casts of 1e30 wrap around).
    fractional = (y != np.round(y)) | (np.abs(y) >= 2**31)
    if fractional.any():
        bad = np.unique(y[fractional])[:5].tolist()
        raise DataError(f"{path}: the {split} split has {int(fractional.sum())} class label(s) "
                        f"that are not class indices (e.g. {bad}); classification labels are "
                        "class indices 0, 1, 2, ... For numeric targets use task kind "
                        "'regression'.")
    return y.astype(np.int64)


def _labels(arrays: dict, kind: str, splits: dict[str, Split], path: Path) -> tuple[str, ...]:
    if "labels" in arrays:
        labels = tuple(str(v) for v in np.atleast_1d(arrays["labels"]).tolist())
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            # Classes are matched by name across problems (Domain Adaptation's label sets), so
            # a repeated name would make two classes one.
            where = "; ".join(f"'{n}' at positions "
                              f"{', '.join(str(i) for i, m in enumerate(labels) if m == n)}"
                              for n in twice[:3])
            raise DataError(f"{path}: `labels` repeats names ({where}); each class needs a "
                            "name of its own.")
        if kind == "classification":
            _check_label_names(labels, splits, path)
        return labels
    if kind == "classification":
        top = int(splits["train"].y.max()) if len(splits["train"]) else 0
        return tuple(str(i) for i in range(max(top + 1, 2)))
    width = splits["train"].y.shape[1]
    return tuple(f"y{i}" for i in range(width))


def _check_label_names(labels: tuple[str, ...], splits: dict[str, Split], path: Path) -> None:
    """DataError when a ``y`` holds a class index that ``labels`` has no name for.

    Classes are matched by name across problems, so an index without a name would make a class
    present in the data invisible (or, cast to another name, a wrong one); the message says
    which indices, where and how many, and what ``labels`` must hold.
    """
    k = len(labels)
    outside: dict[int, dict[str, int]] = {}
    for name, split in splits.items():
        values, counts = torch.unique(split.y, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            if v < 0 or v >= k:
                outside.setdefault(int(v), {})[name] = int(c)
    if not outside:
        return
    shown = sorted(outside)
    where = "; ".join(f"{v}: " + ", ".join(f"{c} in {s}" for s, c in outside[v].items())
                      for v in shown[:6]) + ("; …" if len(shown) > 6 else "")
    named = ", ".join(f"{i}: {n}" for i, n in enumerate(labels[:8])) + (
        ", …" if k > 8 else "")
    negative = [v for v in shown if v < 0]
    fix = (f"labels must be class indices 0, 1, 2, …; renumber the negative ones ({negative})"
           if negative else
           f"add a name for each missing index to `labels` (it needs {max(shown) + 1} names, "
           f"in index order), or drop those samples")
    raise DataError(
        f"{path}: `labels` names {k} classes ({named}) but the data hold class "
        f"ind{'ex' if len(shown) == 1 else 'ices'} {', '.join(map(str, shown[:6]))} it has no "
        f"name for (samples per split — {where}). The declared list contradicts the labels "
        f"present: {fix}."
    )
