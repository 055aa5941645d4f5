"""A run file's data block → the source that reads it: image data (a folder, or a CSV / TSV with
a ``path`` column: :mod:`~tlroutes.data.sources.images`), a table, an ``.npz`` archive or a
``datasets`` folder; names without a path: built-in data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tlroutes.data.builtin import BUILTIN_DATASETS
from tlroutes.data.sources.build import SourceOptions
from tlroutes.data.sources.held import held_problem
from tlroutes.data.sources.hf import dataset_problem, is_datasets_folder
from tlroutes.data.sources.images import is_image_source, load_images
from tlroutes.data.sources.npz import npz_problem
from tlroutes.data.sources.splitting import fingerprint_path
from tlroutes.data.sources.tables import TABLE_SUFFIXES, Columns, frame_problem, read_table
from tlroutes.errors import ConfigError, DataError
from tlroutes.held import is_held
from tlroutes.problem import Problem

if TYPE_CHECKING:
    from tlroutes.config import DataSpec

__all__ = ["file_problem", "is_file_source"]

#: Fields that only tables and datasets folders read.
_COLUMN_FIELDS = ("label", "features", "text", "split_column", "domain_column", "domain_value")


def is_file_source(dataset: str) -> bool:
    """True when ``dataset`` names a table, an ``.npz`` archive, a ``datasets`` folder or
    image data (a folder, or a CSV / TSV with a ``path`` column)."""
    suffix = Path(dataset).suffix.lower()
    return (suffix == ".npz" or suffix in TABLE_SUFFIXES or is_datasets_folder(dataset)
            or (dataset not in BUILTIN_DATASETS and is_image_source(dataset)))


def options_of(spec: DataSpec, seed: int) -> SourceOptions:
    """What ``spec`` declares for any file source (task ``digit``, the default, means none)."""
    return SourceOptions(
        task=None if spec.task == "digit" else spec.task,
        labels=None if spec.labels is None else list(spec.labels),
        classes=spec.classes, n=spec.n, split=tuple(spec.split), seed=seed,
        modality=spec.modality, meta={"file": spec.dataset})


def _tokenizer(spec: DataSpec) -> Callable[[list[str], int], torch.Tensor] | None:
    """The run's trunk's tokenizer, when it has one."""
    if getattr(spec, "_trunk", None) == "minilm_l6":
        from tlroutes.backbones.pretrained import minilm_tokenize

        return lambda texts, length: minilm_tokenize(texts, length=length)
    trunk = getattr(spec, "_trunk", None)
    if isinstance(trunk, str) and trunk.startswith("hf:"):
        from tlroutes.backbones.pretrained.hf_named import hf_tokenizer_for

        return hf_tokenizer_for(trunk)
    return None


def file_problem(spec: DataSpec, seed: int, role: str) -> Problem | None:
    """The problem a file or folder ``spec.dataset`` holds (or a Python object held for the run,
    ``python:<kind>-<key>``), or None when it is no such source."""
    path = Path(spec.dataset)
    suffix = path.suffix.lower()
    options = options_of(spec, seed)
    if is_held(spec.dataset):
        return held_problem(spec, options, role, _tokenizer(spec))
    key = f"{role}-{path.name}"
    cols = Columns(label=spec.label, features=spec.features, text=spec.text,
                   text_length=spec.text_length, split_column=spec.split_column,
                   domain_column=spec.domain_column, domain_value=spec.domain_value)
    if spec.dataset not in BUILTIN_DATASETS and not path.exists() and (
            "/" in spec.dataset or "\\" in spec.dataset or suffix):
        # a path, not a built-in name: say that it is missing, not that no dataset has its name
        raise DataError(f"Data file or folder {path} does not exist (a relative path is read "
                        f"from the current folder, {Path.cwd()}, else from the run file's "
                        "folder).")
    if spec.dataset not in BUILTIN_DATASETS and not is_datasets_folder(path) \
            and is_image_source(path):
        return load_images(path, options, key=key, cols=cols, transforms=spec.transforms,
                           trunk=getattr(spec, "_trunk", None), on_bad_file=spec.on_bad_file)
    if suffix == ".npz":
        named = [f for f in _COLUMN_FIELDS if getattr(spec, f) is not None]
        if named:
            raise ConfigError(f"{path}: {', '.join(named)} name(s) columns, which an .npz "
                              "archive does not have; leave them out.")
        return npz_problem(path, options, key=key, source=_fingerprint(path))
    if suffix in TABLE_SUFFIXES:
        frame = read_table(path)
        return frame_problem(frame, cols, options, name=path.stem, where=str(path), key=key,
                             source=_fingerprint(path), tokenize=_tokenizer(spec))
    if is_datasets_folder(path):
        return dataset_problem(path, cols, options, key=key, source=_fingerprint(path),
                               tokenize=_tokenizer(spec), transforms=spec.transforms,
                               trunk=getattr(spec, "_trunk", None))
    return None


def _fingerprint(path: Path) -> dict:
    try:
        return fingerprint_path(path)
    except OSError:
        return {"path": str(path)}
