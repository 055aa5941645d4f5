"""Hugging Face ``datasets`` folders (made by ``save_to_disk``) as problems.

The folder is opened with ``datasets.load_from_disk`` — local files only, never a hub download.
A ``Dataset`` is one table, split automatically; a ``DatasetDict`` keeps its splits when it has
``train``, ``validation`` (or ``val``/``dev``) and ``test``, and a ``DatasetDict`` of ``train``
alone is split automatically. Columns are chosen as for tables
(:class:`~tlroutes.data.sources.tables.Columns`); a ``ClassLabel`` label column keeps its class
names. Image columns are not read here: they are named in a clear error (save the images as an
image folder, which tlroutes reads lazily).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tlroutes.data.sources.build import SourceOptions
from tlroutes.data.sources.tables import Columns, frame_problem
from tlroutes.errors import DataError, require_extra
from tlroutes.problem import Problem

__all__ = ["dataset_problem", "is_datasets_folder"]

_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_SPLITS = {"train": "train", "validation": "val", "val": "val", "valid": "val", "dev": "val",
           "test": "test"}


def is_datasets_folder(path: str | Path) -> bool:
    """True for a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    path = Path(path)
    return path.is_dir() and any((path / m).is_file() for m in _MARKERS)


def _image_columns(ds: Any) -> list[str]:
    datasets = require_extra("datasets", "data", "Reading a datasets folder")
    return [name for name, feature in ds.features.items()
            if isinstance(feature, datasets.Image)]


def _class_names(ds: Any, label: str | None) -> list[str] | None:
    datasets = require_extra("datasets", "data", "Reading a datasets folder")
    column = label if label is not None else "label"
    feature = ds.features.get(column)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def dataset_problem(
    path: str | Path,
    cols: Columns,
    options: SourceOptions,
    *,
    key: str,
    source: Mapping[str, Any],
    tokenize: Callable[[list[str], int], torch.Tensor] | None = None,
) -> Problem:
    """A :class:`Problem` from the ``save_to_disk`` folder at ``path`` (see module doc)."""
    datasets = require_extra("datasets", "data", "Reading a datasets folder")
    pd = require_extra("pandas", "data", "Reading a datasets folder")
    path = Path(path)
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise DataError(f"Cannot read {path} as a datasets folder (save_to_disk): {exc}") from exc
    where = str(path)
    if isinstance(loaded, datasets.DatasetDict):
        parts = {_SPLITS.get(name.lower()): ds for name, ds in loaded.items()}
        if set(parts) >= {"train", "val", "test"}:
            pieces = [parts[s] for s in ("train", "val", "test")]
        elif set(loaded) == {"train"}:
            pieces = [loaded["train"]]
        else:
            raise DataError(f"{path} holds splits {', '.join(loaded)}; tlroutes needs train, "
                            "validation and test, or train alone (split automatically).")
    else:
        pieces = [loaded]
    images = _image_columns(pieces[0])
    wanted = set(cols.features or []) | {cols.label or "label"}
    if images and (wanted & set(images) or cols.features is None):
        named = sorted(set(images) & wanted) or images
        if wanted & set(images) or cols.text is None:
            raise DataError(
                f"{where}: column(s) {', '.join(map(repr, named))} hold images, which a datasets "
                "folder does not feed here; save the images as an image folder (one subfolder "
                "per class) and give that folder as `dataset`, or name the numeric `features` "
                "to use.")
    names = _class_names(pieces[0], cols.label)
    keep = [c for c in pieces[0].column_names if c not in images]
    frames = [piece.select_columns(keep).to_pandas() for piece in pieces]
    frame = pd.concat(frames, ignore_index=True)
    if len(pieces) == 3:
        split_column = "__tlroutes_split__"
        frame[split_column] = [s for s, p in zip(("train", "val", "test"), pieces, strict=True)
                               for _ in range(len(p))]
        cols = Columns(**{**cols.__dict__, "split_column": split_column})
    return frame_problem(frame, cols, options, name=path.name, where=where, key=key,
                         source=source, tokenize=tokenize, label_names=names)
