"""New data as the input a trained head's stem reads, with the preprocessing its run saved.

Accepted (see :func:`as_inputs`):

- a :class:`~tlroutes.problem.Split` (its ``x``) or a :class:`~tlroutes.problem.Problem` (its
  test split);
- a tensor or numpy array of preprocessed samples ``(N, *input_shape)``;
- a pandas DataFrame, or a CSV/TSV/Parquet file: the feature columns the model was trained on,
  by name (other columns are ignored);
- an ``.npz`` archive: its ``x`` (or ``x_test``) array;
- an image file or a folder of images: read lazily, one batch at a time, through the run's
  evaluation transform (size, crop, mean and std as resolved when it trained);
- a map-style dataset (``len`` and ``[i]``), each item a sample or a ``(sample, label)`` pair,
  read lazily.

A mismatch (a missing column, a wrong sample shape) is one :class:`DataError` saying what the
model expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tlroutes.errors import DataError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Problem, Split

__all__ = ["Inputs", "as_inputs"]


class Inputs:
    """Model-ready inputs and a name for each row (a file path, or the row number)."""

    def __init__(self, x: Tensor | LazyInputs, ids: Sequence[Any] | None = None) -> None:
        self.x = x
        self.ids = list(range(len(x))) if ids is None else list(ids)


def _dtype(pre: dict[str, Any]) -> torch.dtype:
    return getattr(torch, pre.get("dtype") or "float32")


def _shape_of(pre: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(s) for s in pre["input_shape"])


def _check_shape(shape: Sequence[int], pre: dict[str, Any], what: str) -> None:
    want = _shape_of(pre)
    if tuple(shape[1:]) != want:
        raise DataError(
            f"{what} has samples of shape {tuple(shape[1:])} (full shape {tuple(shape)}), but "
            f"this model reads {pre['modality']} samples of shape {want}: pass an array of "
            f"shape (N, {', '.join(map(str, want))}), preprocessed as for training.")


def _tensor(values: Any, pre: dict[str, Any], what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values)
    if t.dim() == len(_shape_of(pre)):  # one sample
        t = t.unsqueeze(0)
    _check_shape(t.shape, pre, what)
    dtype = _dtype(pre)
    if t.is_floating_point() and not dtype.is_floating_point:
        raise DataError(f"{what} holds floats, but this model reads integer token ids "
                        f"({pre['modality']}); pass ids.")
    t = t.to(dtype)
    return t


def _frame(frame: Any, pre: dict[str, Any], what: str) -> Inputs:
    features = pre.get("features")
    if pre.get("text"):
        raise DataError(f"{what}: this model reads a text column ('{pre['text']}') through its "
                        "trunk's tokenizer; pass the token ids as an array, or predict with "
                        "--split on the run's own data.")
    if not features:
        raise DataError(f"{what}: this model was not trained on a table (its inputs are "
                        f"{pre['modality']} samples of shape {tuple(pre['input_shape'])}); "
                        "pass an array, an .npz archive or image files.")
    columns = [str(c) for c in frame.columns]
    missing = [c for c in features if c not in columns]
    if missing:
        raise DataError(
            f"{what} lacks the column(s) {', '.join(missing)} that this model was trained on. "
            f"Expected columns: {', '.join(features)} (others are ignored).")
    values = frame[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{what}: column '{features[col]}' has a missing or non-finite value "
                        f"in row {int(row)} ({int(bad.any(axis=1).sum())} row(s) in all); "
                        "fill or drop them first.")
    return Inputs(torch.as_tensor(values, dtype=torch.float32), list(frame.index))


class _ImageFiles:
    def __init__(self, paths: list[Path]) -> None:
        from tlroutes.data.sources.images import ImageReader

        self.reader = ImageReader(paths)

    def __len__(self) -> int:
        return len(self.reader.paths)

    def read(self, i: int) -> Any:
        return self.reader.read(i)


def _images(path: Path, pre: dict[str, Any], what: str) -> Inputs:
    from tlroutes.data.sources.images import IMAGE_SUFFIXES
    from tlroutes.data.transforms import ImageTransforms

    spec = pre.get("image_transform")
    if spec is None:
        raise DataError(f"{what} holds images, but this model was not trained on image files "
                        f"(its inputs are {pre['modality']} samples of shape "
                        f"{tuple(pre['input_shape'])}); pass an array or an .npz archive.")
    paths = ([path] if path.is_file() else
             sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                    and p.is_file()))
    if not paths:
        raise DataError(f"{what} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    norm = None if spec["mean"] is None else (tuple(spec["mean"]), tuple(spec["std"]))
    transforms = ImageTransforms(size=tuple(spec["size"]), mode=spec["mode"],
                                 normalization=norm, interpolation=spec["interpolation"],
                                 resize=spec["resize"], crop_pct=spec["crop_pct"])
    x = LazyInputs(_ImageFiles(paths), sample_shape=transforms.sample_shape,
                   transform=transforms.eval_transform)
    _check_shape((len(paths), *transforms.sample_shape), pre, what)
    return Inputs(x, [str(p) for p in paths])


class _DatasetReader:
    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, i: int) -> Any:
        item = self.dataset[i]
        return item[0] if isinstance(item, (tuple, list)) else item


def as_inputs(data: Any, pre: dict[str, Any]) -> Inputs:
    """``data`` as the inputs of a head whose preprocessing is ``pre`` (a manifest head's
    ``preprocessing`` block); see the module doc for what ``data`` may be.

    Raises:
        DataError: the data does not fit the model (what it expects is named), or cannot be
            read.
    """
    if isinstance(data, Problem):
        data = data.test
    if isinstance(data, Split):
        _check_shape(data.x.shape, pre, "The split")
        return Inputs(data.x)
    if isinstance(data, (Tensor, np.ndarray)):
        return Inputs(_tensor(data, pre, "The array"))
    if type(data).__name__ == "DataFrame":
        return _frame(data, pre, "The DataFrame")
    if isinstance(data, (str, Path)):
        return _path(Path(data), pre)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        if len(data) == 0:
            raise DataError("The dataset is empty: nothing to predict.")
        first = _DatasetReader(data).read(0)
        _tensor(first, pre, "The dataset's first sample")  # shape and dtype, checked up front
        x = LazyInputs(_DatasetReader(data), sample_shape=_shape_of(pre), dtype=_dtype(pre),
                       transform=lambda s: torch.as_tensor(np.asarray(s)).to(_dtype(pre)))
        return Inputs(x)
    raise DataError(f"Cannot predict on a {type(data).__name__}: pass a path (table, .npz, "
                    "image file or folder), an array, a DataFrame, a dataset, or a Problem or "
                    "Split.")


def _path(path: Path, pre: dict[str, Any]) -> Inputs:
    from tlroutes.data.sources.images import IMAGE_SUFFIXES
    from tlroutes.data.sources.tables import TABLE_SUFFIXES, read_table

    what = str(path)
    if not path.exists():
        raise DataError(f"{path} does not exist: nothing to predict.")
    suffix = path.suffix.lower()
    if path.is_file() and suffix in TABLE_SUFFIXES:
        return _frame(read_table(path), pre, what)
    if path.is_file() and suffix == ".npz":
        from tlroutes.data.sources.npz import read_npz

        arrays = read_npz(path)
        key = next((k for k in ("x", "x_test") if k in arrays), None)
        if key is None:
            raise DataError(f"{path} has no array 'x' (or 'x_test') to predict on; it holds "
                            f"{', '.join(sorted(arrays))}.")
        return Inputs(_tensor(arrays[key], pre, f"{path}:{key}"))
    if path.is_dir() or suffix in IMAGE_SUFFIXES:
        return _images(path, pre, what)
    raise DataError(f"{path} is not a file tlroutes reads for prediction: give a table "
                    f"({', '.join(TABLE_SUFFIXES)}), an .npz archive, image files or a folder "
                    "of them.")
