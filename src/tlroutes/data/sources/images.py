"""Images from a folder: the ImageFolder layout, or a CSV / TSV of ``path,label``.

Two layouts are read (``dataset:`` in a run file):

- **ImageFolder**: ``root/<class>/<image>`` — one subfolder per class (its name is the label),
  image files with the usual suffixes (:data:`IMAGE_SUFFIXES`) inside; files elsewhere are
  ignored. As torchvision's ``ImageFolder``: classes sorted by name. A folder of images without
  class subfolders is unlabelled (with ``labels:`` declared, as below).
- **A table**: a ``.csv`` / ``.tsv`` whose header has a ``path`` column (relative to the table's
  folder, or absolute) and a ``label`` column (``label:`` names another); optional ``split``
  (``train`` / ``val`` / ``test``: the splits as given instead of made; ``split_column:`` names
  another) and ``domain`` (several domains in one table, ``domain_value:`` keeps one;
  ``domain_column:`` names another). Without a label column the problem is unlabelled, which
  needs a declared label list (``labels:``).

Only the list of files and the labels are read up front; the pixels are read lazily
(:class:`~tlroutes.lazy_inputs.LazyInputs`), one batch at a time, through the problem's
transforms (:mod:`tlroutes.data.transforms`).

**Bad files are found up front**, not mid-epoch: every file is opened and checked with
Pillow's ``verify()`` when the data is loaded (the header is parsed and, for PNG, every chunk's
checksum checked, without decoding the pixels — about a tenth of a millisecond for a small
PNG). That also gives each file's size and colour mode, which the domain needs anyway, and lets
``on_bad_file: skip`` leave bad files out *before* the splits are made, so the splits stay the
same from run to run. A file that passes the check but fails to decode later (a JPEG truncated
inside its entropy-coded data, which ``verify`` does not read, or a file changed since) is a
:class:`~tlroutes.errors.DataError` naming the file, never a bare PIL traceback.

Mixed colour modes are converted to the domain's mode (the trunk's, else the mode most files
have) and mixed sizes are resized by the transform; each is said once, in a warning.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tlroutes.config import TransformSpec
from tlroutes.data.sources.build import SourceOptions, build_problem
from tlroutes.data.sources.splitting import SPLIT_NAMES, fingerprint_path
from tlroutes.data.sources.tables import Columns, with_default_columns
from tlroutes.data.transforms import ImageTransforms, resolve_transforms
from tlroutes.errors import ConfigError, DataError, MissingExtraError, did_you_mean, shorten
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Problem

__all__ = ["IMAGE_SUFFIXES", "ImageReader", "is_image_source", "load_images", "scan_images"]

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff",
                                   ".webp", ".ppm", ".pgm")
#: Colour modes read as grey; every other mode is colour (RGB).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: Files named in a message before "…".
_SHOWN = 5


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtraError("Image folders need Pillow: pip install 'tlroutes[data]'."
                                ) from exc
    return Image


def is_image_source(path: str | Path) -> bool:
    """Whether ``dataset: path`` names image data: a folder, or a CSV / TSV whose header has a
    ``path`` column."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix.lower() in (".csv", ".tsv") and path.is_file():
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                header = handle.readline()
        except OSError:
            return False
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return "path" in [c.strip().strip('"') for c in header.rstrip("\r\n").split(sep)]
    return False


# -- listing -----------------------------------------------------------------------------------
@dataclass
class ImageList:
    """The files of an image source and what is known of each before reading it."""

    paths: list[Path]
    labels: list[Any] | None
    splits: list[str] | None = None
    where: list[str] = field(default_factory=list)  # how each file is named in messages


def list_image_folder(root: Path) -> ImageList:
    """The files of an ImageFolder layout, classes and files sorted by name."""
    if not any(root.iterdir()):
        raise DataError(f"Image folder {root} is empty; it needs one subfolder per class with "
                        f"images inside ({root}/<class>/<image>.png).")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = sorted(p for p in root.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not loose:
            raise DataError(f"Image folder {root} has no class subfolders and no images; the "
                            f"ImageFolder layout is {root}/<class>/<image>.png.")
        # Images without class folders: an unlabelled problem (a Domain Adaptation target)
        return ImageList(loose, None, where=[str(p) for p in loose])
    paths, labels = [], []
    for folder in classes:
        files = sorted(p for p in folder.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"Class folder {folder} holds no images (files ending in "
                            f"{', '.join(IMAGE_SUFFIXES)}); add images or remove the folder.")
        paths += files
        labels += [folder.name] * len(files)
    return ImageList(paths, labels, where=[str(p) for p in paths])


def _read_table(path: Path) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingExtraError("CSV image lists need pandas: pip install 'tlroutes[data]'."
                                ) from exc
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        # every column as text: labels "007" stay "007", paths are never numbers
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path} as a {'TSV' if sep == chr(9) else 'CSV'} table: "
                        f"{shorten(str(exc), 200)}") from exc


def list_image_table(table: Path, cols: Columns | None = None) -> ImageList:
    """The files a CSV / TSV of ``path,label[,split][,domain]`` lists (see module doc).

    ``cols`` names the label column (default ``label``), the split column (default ``split``
    when there is one) and the domain column (default ``domain`` when there is one) with the
    value whose rows to keep.
    """
    frame = _read_table(table)
    columns = [str(c) for c in frame.columns]
    # the one rule of every table: `split` and `domain` columns are read unless others are named
    cols = with_default_columns(cols or Columns(), columns)
    if "path" not in columns:
        raise DataError(f"{table} has no 'path' column.{did_you_mean('path', columns)} "
                        f"Columns: {shorten(columns)}.")
    for role, name in (("label", cols.label), ("split_column", cols.split_column),
                       ("domain_column", cols.domain_column)):
        if name is not None and name not in columns:
            raise DataError(f"{table} has no column '{shorten(name)}' ({role})."
                            f"{did_you_mean(name, columns)} Columns: {shorten(columns)}.")
    if len(frame) == 0:
        raise DataError(f"{table} lists no images (a header and no rows).")
    domain_column = cols.domain_column
    if domain_column is not None:
        values = sorted(set(frame[domain_column]))
        if cols.domain_value is not None:
            frame = frame[frame[domain_column] == str(cols.domain_value)]
            if len(frame) == 0:
                raise DataError(f"{table}: no row has {domain_column} "
                                f"{shorten(cols.domain_value, quote=True)}."
                                f"{did_you_mean(str(cols.domain_value), values)} Values: "
                                f"{shorten(values)}.")
        elif len(values) > 1:
            raise DataError(f"{table}: column '{domain_column}' names {len(values)} domains "
                            f"({shorten(values)}); set `domain_value` to the one this problem "
                            "takes.")
    elif cols.domain_value is not None:
        raise DataError(f"{table} has no 'domain' column to pick domain_value "
                        f"{shorten(cols.domain_value, quote=True)} from; name it with "
                        "`domain_column`.")
    rows = [int(i) + 2 for i in frame.index]  # line numbers: the header is line 1
    base = table.parent
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in frame["path"]]
    # The cell as written (not the resolved path): a long folder would push the file name, the
    # useful part, past the echo limit.
    where = [f"{table} line {r} ({shorten(str(p))})"
             for r, p in zip(rows, frame["path"], strict=True)]
    empty = [w for w, p in zip(where, frame["path"], strict=True) if not str(p).strip()]
    if empty:
        raise DataError(f"{empty[0]}: the path is empty; every row names an image file.")
    label = cols.label or "label"
    labels = list(frame[label]) if label in columns else None
    split_column = cols.split_column
    splits = list(frame[split_column]) if split_column is not None else None
    return ImageList(paths, labels, splits, where)


# -- checking ----------------------------------------------------------------------------------
@dataclass
class Scan:
    """What checking every file found: sizes ``(h, w)`` and modes of the good files, and the
    bad ones with their reasons."""

    good: np.ndarray
    sizes: list[tuple[int, int]]
    modes: list[str]
    bad: list[tuple[str, str]]


def scan_images(images: ImageList, *, on_bad_file: str = "error") -> Scan:
    """Open and ``verify()`` every file (see module doc).

    Raises:
        DataError: with ``on_bad_file="error"``, the first bad files, named with the reason;
            with ``"skip"``, only when no file is good.
    """
    image = _pil()
    good = np.zeros(len(images.paths), dtype=bool)
    sizes, modes, bad = [], [], []
    for i, (path, where) in enumerate(zip(images.paths, images.where, strict=True)):
        try:
            with image.open(path) as im:
                mode, (w, h) = im.mode, im.size
                im.verify()
        except FileNotFoundError:
            bad.append((where, "no such file"))
            continue
        except (OSError, SyntaxError, ValueError, EOFError, image.DecompressionBombError) as exc:
            reason = shorten(str(exc) or type(exc).__name__, 120)
            bad.append((where, f"not a readable image: {reason}"))
            continue
        good[i] = True
        sizes.append((h, w))
        modes.append(mode)
    if bad and on_bad_file == "error":
        shown = "; ".join(f"{w}: {why}" for w, why in bad[:_SHOWN])
        more = f" (and {len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
        raise DataError(f"{len(bad)} of {len(images.paths)} image file(s) cannot be read — "
                        f"{shown}{more}. Replace or remove them, or set `on_bad_file: skip` in "
                        "the data block to leave them out.")
    if not good.any():
        raise DataError(f"None of the {len(images.paths)} image file(s) can be read (e.g. "
                        f"{bad[0][0]}: {bad[0][1]}).")
    if bad:
        listed = "; ".join(f"{w} ({why})" for w, why in bad[:20])
        more = f"; and {len(bad) - 20} more" if len(bad) > 20 else ""
        warnings.warn(f"on_bad_file: skip left out {len(bad)} of {len(images.paths)} image "
                      f"file(s) that cannot be read: {listed}{more}.", stacklevel=3)
    return Scan(good, sizes, modes, bad)


# -- reading -----------------------------------------------------------------------------------
class ImageReader:
    """Reads image ``i`` from disk as a decoded PIL image (a :class:`SampleReader`).

    Picklable (a list of paths), so data-loader workers each hold their own.
    """

    def __init__(self, paths: Sequence[Path | str]) -> None:
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> Any:
        """Image ``i``, decoded; a file that cannot be decoded is a :class:`DataError`."""
        image = _pil()
        path = self.paths[i]
        try:
            im = image.open(path)
            im.load()  # decodes now, and closes a single-frame file opened by name
        except (OSError, SyntaxError, ValueError, EOFError, image.DecompressionBombError) as exc:
            raise DataError(
                f"Image {path} cannot be decoded ({shorten(str(exc) or type(exc).__name__, 120)})"
                ", although it passed the check when the data was loaded: it is damaged past its "
                "header or changed since. Replace or remove it and load the data again (with "
                "`on_bad_file: skip` to leave out files found bad then).") from exc
        return im


# -- the problem ---------------------------------------------------------------------------------
def _family(mode: str) -> str:
    return "L" if mode in GREY_MODES else "RGB"


def _say_once(scan: Scan, transforms: ImageTransforms, where: str, data_mode: str
              ) -> dict[str, Any]:
    """Warn once about converted modes and resized sizes; the facts for ``Problem.meta``."""
    facts: dict[str, Any] = {}
    converted = Counter(m for m in scan.modes if m != transforms.mode)
    if converted:
        n = sum(converted.values())
        modes = ", ".join(f"{c} {m}" for m, c in converted.most_common())
        why = ("the mode most images have" if transforms.mode == data_mode
               else "the mode the trunk or `transforms.mode` asks for")
        warnings.warn(f"{where}: {n} of {len(scan.modes)} images are converted to "
                      f"{transforms.mode}, {why} ({modes}).", stacklevel=3)
        facts["converted"] = {"to": transforms.mode, "from": dict(converted)}
    sizes = Counter(scan.sizes)
    if len(sizes) > 1:
        (h, w), common = sizes.most_common(1)[0]
        th, tw = transforms.size
        warnings.warn(f"{where}: the images have {len(sizes)} different sizes ({common} of "
                      f"{len(scan.sizes)} are {h}×{w}); each is resized by the transform to "
                      f"{th}×{tw} ({transforms.resize}).", stacklevel=3)
        facts["image_sizes"] = len(sizes)
    return facts


def _warn_absent_classes(problem: Any, where: str) -> None:
    """A class without samples in a split is a warning: said once for a declared class with no
    sample at all, else once per split that lacks it."""
    if problem.task.kind != "classification" or problem.unlabelled:
        return
    counts = problem.class_counts
    nowhere = [c for c in problem.task.labels
               if not any(counts[s].get(c, 0) for s in SPLIT_NAMES)]
    if nowhere:
        warnings.warn(f"{where}: declared class(es) {shorten(nowhere)} have no sample at all; "
                      "the model can predict them but nothing measures them.", stacklevel=3)
    for split in SPLIT_NAMES:
        absent = [c for c in problem.task.labels if c not in nowhere and not counts[split].get(c)]
        if absent:
            warnings.warn(f"{where}: the {split} split has no sample of class(es) "
                          f"{shorten(absent)}; its metrics say nothing about them. Give each "
                          "class more samples, or other split fractions.", stacklevel=3)


def load_images(
    path: str | Path,
    options: SourceOptions,
    *,
    key: str,
    cols: Columns | None = None,
    transforms: TransformSpec | None = None,
    trunk: str | None = None,
    on_bad_file: str = "error",
) -> Problem:
    """A :class:`~tlroutes.problem.Problem` from an image folder or an image table.

    Labels, ``classes``, ``n`` and the splits go through the same funnel as every source
    (:func:`~tlroutes.data.sources.build.build_problem`).

    Args:
        path: an ImageFolder root, or a ``.csv`` / ``.tsv`` with a ``path`` column.
        options: the data block's task, label list, classes, n, split fractions, seed, domain.
            A folder's labels are class names, so its task is a classification; a table's label
            column may be a ``regression`` target.
        key: names the problem's kept splits in the run folder (its role and dataset).
        cols: a table's columns: ``label`` (default ``label``; without one the problem is
            unlabelled), ``split_column`` (default ``split`` when present), ``domain_column``
            (default ``domain`` when present) and ``domain_value``.
        transforms: the ``transforms:`` block. Default: the trunk's defaults, no augmentation.
        trunk: the run's trunk name (transform defaults). Default None.
        on_bad_file: ``"error"`` (default) or ``"skip"`` (see module doc).
    """
    path = Path(path)
    if on_bad_file not in ("error", "skip"):
        raise ConfigError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}.")
    if path.is_dir():
        images = list_image_folder(path)
        if images.labels is None and not options.labels:
            raise DataError(
                f"Image folder {path} holds {len(images.paths)} image(s) directly and no class "
                f"subfolders, so it has no labels; the ImageFolder layout is {path}/<class>/"
                "<image>.png (or list the files with their labels in a CSV of path,label). For "
                "an unlabelled folder (a Domain Adaptation target) give the classes it is "
                "predicted over as `labels: [...]`.")
        if options.task not in (None, "classification"):
            raise ConfigError(f"{path}: an image folder's labels are its class folders' names; "
                              f"task '{options.task}' cannot be read from them. Use task: "
                              "classification, or a CSV of path,label for other targets.")
        where = f"{path} ({'class folders' if images.labels is not None else 'no class folders'})"
    elif path.is_file():
        images = list_image_table(path, cols)
        where = f"{path}, column '{(cols.label if cols else None) or 'label'}'"
    else:
        raise DataError(f"Image data {path} does not exist.")
    scan = scan_images(images, on_bad_file=on_bad_file)
    keep = np.flatnonzero(scan.good)
    data_mode = Counter(_family(m) for m in scan.modes).most_common(1)[0][0]
    data_size = Counter(scan.sizes).most_common(1)[0][0]
    t = resolve_transforms(transforms or TransformSpec(), trunk=trunk, data_size=data_size,
                           data_mode=data_mode, where=f"{key}: transforms")
    facts = _say_once(scan, t, str(path), data_mode)
    x = LazyInputs(ImageReader([images.paths[i] for i in keep]), sample_shape=t.sample_shape,
                   transform=t.eval_transform,
                   train_transform=t.train_transform if t.augmented else None)
    y = None if images.labels is None else np.asarray([images.labels[i] for i in keep],
                                                      dtype=object)
    if y is not None and options.task in ("regression", "multilabel") and path.is_file():
        try:  # the table is read as text (labels "007" stay "007"); a numeric target is numbers
            y = y.astype(np.float64)
        except ValueError as exc:
            raise DataError(f"{where}: a {options.task} target must be numbers "
                            f"({shorten(str(exc), 120)}).") from exc
    split_of = None if images.splits is None else [images.splits[i] for i in keep]
    name = path.name if path.is_dir() else path.stem
    meta = {**options.meta, "file": str(path),
            "source": "image_folder" if path.is_dir() else "image_table",
            "transforms": {"size": list(t.size), "mode": t.mode, "resize": t.resize,
                           "normalization": None if t.normalization is None
                           else [list(v) for v in t.normalization],
                           "train": [str(a) for a in t.augmentations]},
            "bad_files": [w for w, _ in scan.bad], **facts}
    if y is None:
        meta["unlabelled_because"] = ("images without class folders" if path.is_dir()
                                      else "the table has no label column")
    opts = replace(options, modality="image", meta=meta)
    problem = build_problem(name, x, y, opts, where=where, key=key,
                            source={**fingerprint_path(path), "bad_files": len(scan.bad)},
                            split_of=split_of)
    problem.domain = replace(problem.domain, normalization=t.normalization)
    _warn_absent_classes(problem, str(path))
    return problem
