"""Train / validation / test splits for data that comes unsplit, and the Problem made from them.

- :func:`subsample`: ``n:`` samples of a source, seeded and stratified;
- :func:`make_splits`: seeded index lists ``train``, ``val``, ``test`` — stratified for
  classification so that every class with at least three samples is in every split;
- :func:`splits_for`: the same, written into the run folder
  (``<run folder>/data/<key>.splits.json``, with the source's fingerprint) and read back on
  resume, so a resumed run trains on the very samples it started with; a source that changed
  since is refused;
- :func:`assemble`: inputs (a tensor or a :class:`~tlroutes.lazy_inputs.LazyInputs`) and targets
  cut by the index lists into a validated :class:`~tlroutes.problem.Problem`.

The run folder is set by the runner for the duration of a run (:func:`run_folder`); outside a run
(``tlroutes inspect``, ``plan``, the Python API) the splits are made afresh, which gives the same
lists for the same seed.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlroutes.data.splits import check_fractions, seeded_generator, split_sizes, stratified_order
from tlroutes.errors import ConfigError, DataError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Domain, Problem, Split, Task
from tlroutes.runfolder.atomic import write_json

__all__ = ["SPLIT_NAMES", "assemble", "fingerprint_path", "make_splits", "run_folder",
           "splits_for", "subsample"]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

#: Classes with at least this many samples get one in every split.
_EVERY_SPLIT = 3

_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("tlroutes_run_folder",
                                                                     default=None)


@contextlib.contextmanager
def run_folder(folder: str | Path | None) -> Iterator[None]:
    """Within this block, automatic splits are kept in ``folder / "data"`` (see module doc)."""
    token = _FOLDER.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _FOLDER.reset(token)


def current_run_folder() -> Path | None:
    """The run folder set by :func:`run_folder`, or None outside a run."""
    return _FOLDER.get()


def subsample(n_total: int, n: int | None, *, y: np.ndarray | None, seed: int,
              where: str) -> np.ndarray:
    """Positions of ``n`` of ``n_total`` samples (sorted), seeded; stratified when ``y`` is given.

    ``n`` None keeps all. A stratified subsample keeps each class's share within one sample.

    Raises:
        DataError: ``n`` is larger than ``n_total``.
    """
    if n is None or n == n_total:
        return np.arange(n_total)
    if n > n_total:
        raise DataError(f"{where}: n={n} but the data holds only {n_total} samples; lower `n` "
                        "or leave it out to keep all.")
    gen = seeded_generator(seed, "subsample")
    if y is not None:
        order = stratified_order(torch.as_tensor(y), gen).numpy()
    else:
        order = torch.randperm(n_total, generator=gen).numpy()
    return np.sort(order[:n])


def _allocate(count: int, fractions: Sequence[float]) -> list[int]:
    """``count`` samples shared by ``fractions`` (largest remainder), one per split when
    ``count`` allows it."""
    exact = [f * count for f in fractions]
    sizes = [int(e) for e in exact]
    by_remainder = sorted(range(3), key=lambda j: exact[j] - sizes[j], reverse=True)
    for i in by_remainder[: count - sum(sizes)]:
        sizes[i] += 1
    if count >= _EVERY_SPLIT:
        for i in range(3):
            while sizes[i] < 1:
                sizes[max(range(3), key=lambda j: sizes[j])] -= 1
                sizes[i] += 1
    return sizes


def make_splits(
    n: int,
    *,
    y: np.ndarray | None,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int,
    stratify: bool = True,
) -> dict[str, np.ndarray]:
    """Seeded train / validation / test index lists over ``n`` samples.

    Args:
        n: the number of samples.
        y: class ids ``(n,)`` to stratify by; None (regression, unlabelled data) splits at
            random.
        fractions: train, validation and test fractions, positive, summing to 1. Default
            ``(0.6, 0.2, 0.2)``.
        seed: the same seed (and data) gives the same lists.
        stratify: share every class across the splits in the fractions (default True); a class
            with at least three samples has one in every split. Ignored when ``y`` is None.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``: sorted ``int64`` positions, disjoint,
        covering ``0..n-1``, none empty.

    Raises:
        DataError: fewer than three samples (three non-empty splits are impossible).
        ConfigError: bad fractions.
    """
    fractions = check_fractions(fractions)
    if n < 3:
        raise DataError(f"{n} sample(s) cannot fill three non-empty splits (train, val, test); "
                        "give at least 3 samples, or pre-split data.")
    gen = seeded_generator(seed, "split")
    if y is None or not stratify:
        order = torch.randperm(n, generator=gen).numpy()
        a, b, _ = split_sizes(n, fractions)
        parts = [order[:a], order[a:a + b], order[a + b:]]
    else:
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != n:
            raise DataError(f"make_splits: {n} samples but {y.shape[0]} labels.")
        parts_lists: list[list[np.ndarray]] = [[], [], []]
        for cls in np.unique(y):
            members = np.flatnonzero(y == cls)
            members = members[torch.randperm(members.size, generator=gen).numpy()]
            sizes = _allocate(members.size, fractions)
            start = 0
            for i, size in enumerate(sizes):
                parts_lists[i].append(members[start:start + size])
                start += size
        parts = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts_lists]
        # Only classes of one or two samples can leave a split empty: lend it one sample from
        # the largest split.
        for i in range(3):
            if parts[i].size == 0:
                big = max(range(3), key=lambda j: parts[j].size)
                parts[i], parts[big] = parts[big][-1:], parts[big][:-1]
    return {name: np.sort(p).astype(np.int64) for name, p in zip(SPLIT_NAMES, parts, strict=True)}


def fingerprint_path(path: str | Path) -> dict[str, Any]:
    """A cheap fingerprint of a file or folder: its size (a folder: file count and total size)
    and latest modification time in nanoseconds."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        stats = [p.stat() for p in files]
        return {"path": str(path), "files": len(files), "size": sum(s.st_size for s in stats),
                "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _file_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", key).strip("-.") or "data"


def splits_for(
    key: str,
    *,
    source: Mapping[str, Any],
    n: int,
    y: np.ndarray | None,
    fractions: Sequence[float],
    seed: int,
    stratify: bool = True,
    folder: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """:func:`make_splits`, kept in the run folder and reused on resume.

    Args:
        key: the problem's key (its role and dataset), the file's name.
        source: the source's fingerprint (:func:`fingerprint_path`, or any JSON facts that
            change when the data does).
        n, y, fractions, seed, stratify: as :func:`make_splits`.
        folder: the run folder; None (default) the one set by :func:`run_folder`, and with
            neither the splits are only made, not kept.

    Raises:
        DataError: the kept splits were made from another version of the source or with other
            settings (the message names what changed and what to do), or the file is damaged.
    """
    folder = Path(folder) if folder is not None else current_run_folder()
    settings = {"n": int(n), "fractions": [float(f) for f in fractions], "seed": int(seed),
                "stratify": bool(stratify and y is not None)}
    if folder is None:
        return make_splits(n, y=y, fractions=fractions, seed=seed, stratify=stratify)
    path = folder / "data" / f"{_file_key(key)}.splits.json"
    if path.is_file():
        return _read_kept(path, source, settings, n)
    splits = make_splits(n, y=y, fractions=fractions, seed=seed, stratify=stratify)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"source": dict(source), "settings": settings,
                      **{name: splits[name].tolist() for name in SPLIT_NAMES}})
    return splits


def _read_kept(path: Path, source: Mapping[str, Any], settings: dict[str, Any],
               n: int) -> dict[str, np.ndarray]:
    try:
        kept = json.loads(path.read_text())
        kept_source, kept_settings = kept["source"], kept["settings"]
        splits = {name: np.asarray(kept[name], dtype=np.int64) for name in SPLIT_NAMES}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is damaged ({exc}); delete it to split the data afresh, or "
                        "start a new run folder.") from exc
    changed = sorted(k for k in set(kept_source) | set(source)
                     if kept_source.get(k) != source.get(k))
    if changed:
        raise DataError(
            f"The data changed since this run split it ({', '.join(changed)} differ from "
            f"{path}): the kept train/val/test lists would pick other samples. Restore the data "
            "the run started with, or start a new run folder.")
    changed = sorted(k for k in settings if kept_settings.get(k) != settings[k])
    if changed:
        raise DataError(f"{path} was made with other split settings ({', '.join(changed)}); "
                        "resume with the same run file, or start a new run folder.")
    every = np.concatenate([splits[s] for s in SPLIT_NAMES])
    if every.size != n or np.unique(every).size != n or every.min(initial=0) < 0 \
            or every.max(initial=0) >= n:
        raise DataError(f"{path} does not split {n} samples into disjoint lists; delete it to "
                        "split the data afresh, or start a new run folder.")
    return splits


def assemble(
    name: str,
    task: Task,
    domain: Domain,
    x: torch.Tensor | LazyInputs,
    y: torch.Tensor,
    splits: Mapping[str, np.ndarray | torch.Tensor],
    meta: dict[str, Any] | None = None,
) -> Problem:
    """A validated :class:`Problem` from all of a source's inputs and targets and index lists.

    Args:
        name: the problem's name.
        task, domain: what is predicted, where the inputs come from.
        x: every sample's input, ``(N, *domain.input_shape)``: a tensor, or a
            :class:`~tlroutes.lazy_inputs.LazyInputs` (each split stays lazy).
        y: every sample's target (see :mod:`tlroutes.problem`).
        splits: positions in ``x`` of ``"train"``, ``"val"`` and ``"test"``.
        meta: facts about the data, kept in ``Problem.meta`` (``sizes`` is added).

    Raises:
        DataError: a split is missing, or the problem fails :meth:`Problem.validate`.
    """
    missing = [s for s in SPLIT_NAMES if s not in splits]
    if missing:
        raise ConfigError(f"assemble: splits lack {', '.join(missing)}.")
    if len(x) != len(y):
        raise DataError(f"problem '{name}': {len(x)} inputs but {len(y)} targets.")
    whole = Split(x, y)
    parts = {s: whole.subset(torch.as_tensor(np.asarray(splits[s]), dtype=torch.long))
             for s in SPLIT_NAMES}
    info = dict(meta or {})
    info["sizes"] = {s: len(parts[s]) for s in SPLIT_NAMES}
    return Problem(name, task, domain, parts["train"], parts["val"], parts["test"],
                   meta=info).validate()
