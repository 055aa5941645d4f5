"""Hugging Face ``datasets`` folders (made by ``save_to_disk``) as problems.

The folder is opened with ``datasets.load_from_disk`` — local files only, never a hub download.
A ``Dataset`` is one table, split automatically; a ``DatasetDict`` keeps its splits when it has
``train``, ``validation`` (or ``val``/``dev``) and ``test``, and a ``DatasetDict`` of ``train``
alone is split automatically. Columns are chosen as for tables
(:class:`~tlroutes.data.sources.tables.Columns`); a ``ClassLabel`` label column keeps its class
names. An ``Image`` column (the ``features:`` named, or the only one when ``features`` is not
given) makes an image problem: its pixels are read lazily, row by row from the folder's Arrow
files, through the run's image transforms (:mod:`tlroutes.data.transforms`), as an image folder
is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlroutes.config import TransformSpec
from tlroutes.data.sources.build import SourceOptions, build_problem
from tlroutes.data.sources.tables import Columns, frame_problem
from tlroutes.data.transforms import resolve_transforms
from tlroutes.errors import DataError, require_extra
from tlroutes.lazy_inputs import LazyInputs
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
    transforms: TransformSpec | None = None,
    trunk: str | None = None,
) -> Problem:
    """A :class:`Problem` from the ``save_to_disk`` folder at ``path`` (see module doc).

    ``transforms`` and ``trunk`` (the run's ``transforms:`` block and trunk name) set how an
    image column is read; other columns are read as a table.
    """
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
    wanted = set(cols.features or [])
    chosen = sorted(wanted & set(images)) if wanted else images
    if images and chosen:
        if len(chosen) > 1 or (wanted and wanted - set(images)):
            raise DataError(
                f"{where}: an image problem reads one image column; `features` names "
                f"{', '.join(map(repr, sorted(wanted or chosen)))}. Name one of the image "
                f"columns ({', '.join(map(repr, images))}) alone.")
        return _image_problem(pieces, chosen[0], cols, options, path=path, key=key,
                              source=source, transforms=transforms, trunk=trunk)
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


class DatasetImageReader:
    """Reads row ``i``'s image from a ``datasets`` table as a decoded PIL image (a
    :class:`~tlroutes.lazy_inputs.SampleReader`). Picklable: the table is memory-mapped from
    its Arrow files, so data-loader workers each open their own."""

    def __init__(self, table: Any, column: str) -> None:
        self.table, self.column = table, column

    def __len__(self) -> int:
        return len(self.table)

    def read(self, i: int) -> Any:
        """Image ``i``, decoded."""
        image = self.table[int(i)][self.column]
        if image is None:
            raise DataError(f"Row {i} of the datasets column '{self.column}' holds no image; "
                            "drop that row from the dataset.")
        image.load()
        return image


def _image_problem(pieces: list[Any], column: str, cols: Columns, options: SourceOptions, *,
                   path: Path, key: str, source: Mapping[str, Any],
                   transforms: TransformSpec | None, trunk: str | None) -> Problem:
    """An image problem from the ``datasets`` tables ``pieces`` (one, or train/val/test)."""
    datasets = require_extra("datasets", "data", "Reading a datasets folder")
    table = datasets.concatenate_datasets(pieces) if len(pieces) > 1 else pieces[0]
    where = f"{path}, column '{column}'"
    label = cols.label if cols.label is not None else (
        "label" if "label" in table.column_names else None)
    if label is not None and label not in table.column_names:
        raise DataError(f"{path} has no column '{label}'; its columns are "
                        f"{', '.join(table.column_names)}.")
    names = _class_names(pieces[0], label)
    y = None
    if label is not None:
        values = table[label]
        y = np.asarray([names[v] if names is not None and v is not None else v
                        for v in values], dtype=object)
        if names is not None and options.labels is None:
            options = replace(options, labels=list(names))
    split_of = None
    if len(pieces) == 3:
        split_of = [s for s, p in zip(("train", "val", "test"), pieces, strict=True)
                    for _ in range(len(p))]
    elif cols.split_column is not None or "split" in table.column_names:
        split_of = table[cols.split_column or "split"]
    # the mode and size most images have, from a sample of the first rows (as an image
    # folder's check reads them all, but without decoding a whole large dataset up front)
    probe = DatasetImageReader(table.select_columns([column]), column)
    seen = [probe.read(i) for i in range(min(64, len(probe)))]
    if not seen:
        raise DataError(f"{where} holds no rows.")
    data_mode = Counter("L" if im.mode in ("1", "L", "LA", "I", "F") else "RGB"
                        for im in seen).most_common(1)[0][0]
    data_size = Counter((im.height, im.width) for im in seen).most_common(1)[0][0]
    t = resolve_transforms(transforms or TransformSpec(), trunk=trunk, data_size=data_size,
                           data_mode=data_mode, where=f"{key}: transforms")
    x = LazyInputs(probe, sample_shape=t.sample_shape, transform=t.eval_transform,
                   train_transform=t.train_transform if t.augmented else None)
    meta = {**options.meta, "file": str(path), "source": "datasets_images",
            "transforms": {"size": list(t.size), "mode": t.mode, "resize": t.resize}}
    problem = build_problem(path.name, x, y, replace(options, modality="image", meta=meta),
                            where=where, key=key, source=source, split_of=split_of)
    problem.domain = replace(problem.domain, normalization=t.normalization)
    return problem
