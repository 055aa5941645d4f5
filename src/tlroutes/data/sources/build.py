"""One funnel from a source's raw inputs and labels to a validated :class:`Problem`.

Every non-built-in source (tables, ``.npz``, ``datasets`` folders, Python objects) ends here, so
labels, task kinds, ``classes``, ``n`` and ``split`` mean the same for all of them:

1. the task kind is read safely (:func:`~tlroutes.data.sources.labels.infer_task_kind`) and class
   labels become ids with their names (:func:`~tlroutes.data.sources.labels.encode_labels`);
2. ``classes`` keeps some classes (by name or id), ``n`` a seeded, stratified subsample;
3. rows keep a split the source gives them (a split column, pre-made archives); otherwise the
   splits are made here — seeded, stratified for classification — and kept in the run folder
   (:func:`~tlroutes.data.sources.splitting.splits_for`);
4. the problem is assembled and validated.

**Unlabelled data** (no ``y`` at all, e.g. a Domain Adaptation target): the targets are ``-1``
everywhere and ``Problem.meta["unlabelled"]`` is True. Its task is the declared one —
``task:`` (classification by default) and ``labels:``, the classes it is predicted over — since no
label can tell it. :func:`tlroutes.problem.Problem.validate` then checks no targets, class counts
are empty, and :func:`require_labels` refuses it wherever labels are needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tlroutes.data.sources.labels import encode_labels, infer_task_kind, select_classes, to_numpy
from tlroutes.data.sources.splitting import SPLIT_NAMES, assemble, splits_for, subsample
from tlroutes.errors import DataError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Domain, Problem, Task

__all__ = ["SourceOptions", "UNLABELLED", "build_problem", "infer_modality", "require_labels"]

#: The target value of every sample of an unlabelled problem.
UNLABELLED = -1

_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "dev": "val", "test": "test", "testing": "test"}


@dataclass
class SourceOptions:
    """What a run file's data block (or a Python caller) says about a source, beyond its rows.

    Args:
        task: the declared task kind, or None to read it from the labels.
        labels: the declared class names (see :func:`encode_labels`), or None.
        classes: keep only these classes (names or ids), or None for all.
        n: keep this many samples (seeded, stratified) before splitting, or None for all.
        split: train / validation / test fractions for automatic splits.
        seed: the seed of subsampling and splitting.
        modality: the declared modality, or None to infer it from the sample shape.
        domain: the domain's name, or None for the problem's name.
    """

    task: str | None = None
    labels: Sequence[str] | None = None
    classes: Sequence[str | int] | None = None
    n: int | None = None
    split: Sequence[float] = (0.6, 0.2, 0.2)
    seed: int = 0
    modality: str | None = None
    domain: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def infer_modality(shape: Sequence[int], declared: str | None, where: str) -> str:
    """The declared modality, or one read from the sample shape: 3-D image, 2-D signal, 1-D
    tabular."""
    if declared is not None:
        return declared
    inferred = {3: "image", 2: "signal", 1: "tabular"}.get(len(tuple(shape)))
    if inferred is None:
        raise DataError(f"{where}: samples of shape {tuple(shape)} fit no modality; set "
                        "`modality` (image: C×H×W, signal: C×L, tabular: D).")
    return inferred


def _split_assignment(values: Any, where: str) -> np.ndarray:
    """Each row's split name, normalised to train / val / test."""
    array = to_numpy(values)
    out = np.empty(array.shape[0], dtype=object)
    bad: dict[str, int] = {}
    for i, v in enumerate(array.tolist()):
        name = _SPLIT_ALIASES.get(str(v).strip().lower())
        if name is None:
            bad.setdefault(str(v), i)
        out[i] = name
    if bad:
        shown = ", ".join(f"{v!r} (row {r})" for v, r in list(bad.items())[:5])
        raise DataError(f"{where}: split values {shown} are not train, val (validation) or "
                        "test; fix them or leave out split_column to split automatically.")
    return out


def _targets(y: Any, kind: str, options: SourceOptions, where: str, split_of: Any | None
             ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Targets as an array for ``kind`` and the label or target names."""
    if kind == "classification":
        groups = None if split_of is None else _split_assignment(split_of, where)
        return encode_labels(y, names=options.labels, where=where, groups=groups)
    array = to_numpy(y)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where}: {kind} targets must be numbers, got {array.dtype} values.")
    array = array.astype(np.float32)
    if array.ndim == 1:
        array = array[:, None]
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        rows = ", ".join(str(int(r)) for r in np.flatnonzero(bad)[:5])
        raise DataError(f"{where}: {int(bad.sum())} target(s) are NaN or infinite, first at "
                        f"row(s) {rows}; drop or fill those rows.")
    if kind == "multilabel" and not bool(((array == 0) | (array == 1)).all()):
        raise DataError(f"{where}: multilabel targets must be 0 or 1 in every column.")
    width = array.shape[1]
    names = tuple(options.labels) if options.labels else (
        tuple(f"y{i}" for i in range(width)) if width > 1 or kind == "multilabel" else ())
    if names and len(names) != width:
        raise DataError(f"{where}: `labels` names {len(names)} targets but the data has {width}.")
    return array, names


def build_problem(
    name: str,
    x: torch.Tensor | LazyInputs,
    y: Any | None,
    options: SourceOptions,
    *,
    where: str,
    key: str,
    source: Mapping[str, Any],
    split_of: Any | None = None,
) -> Problem:
    """A validated :class:`Problem` from all of a source's samples (see module doc).

    Args:
        name: the problem's name.
        x: every sample's input ``(N, *shape)``: a tensor (float; long for token ids) or a
            :class:`~tlroutes.lazy_inputs.LazyInputs`.
        y: every sample's target (labels of any kind :func:`encode_labels` reads, or numbers),
            or None for unlabelled data.
        options: the declared facts (:class:`SourceOptions`).
        where: the source as named in errors (a file, a column).
        key: the problem's key in the run folder (its splits file).
        source: the source's fingerprint (for the kept splits).
        split_of: each row's split (``train``/``val``/``test``, ``validation`` …), or None to
            split automatically.
    """
    n_all = len(x)
    meta = {**options.meta}
    if y is None:
        kind = options.task or "classification"
        if kind == "classification" and not options.labels:
            raise DataError(
                f"{where} holds no labels, so the classes it is predicted over cannot be read "
                "from it: give them as `labels: [...]` (the source's class names), or give the "
                "labels.")
        width = len(options.labels) if options.labels else 1
        names = tuple(options.labels or ())
        targets = (np.full(n_all, UNLABELLED, np.int64) if kind == "classification"
                   else np.full((n_all, width), np.nan, np.float32))
        meta["unlabelled"] = True
        strat = None
    else:
        if len(to_numpy(y)) != n_all:
            raise DataError(f"{where}: {n_all} inputs but {len(to_numpy(y))} labels.")
        kind = infer_task_kind(y, declared=options.task, where=where)
        targets, names = _targets(y, kind, options, where, split_of)
        strat = targets if kind == "classification" else None
    keep = np.arange(n_all)
    if options.classes is not None:
        if kind != "classification" or y is None:
            raise DataError(f"{where}: `classes` keeps classes of a labelled classification; "
                            f"this problem is {'unlabelled' if y is None else kind}.")
        mask, new_ids, names = select_classes(targets, names, options.classes, where=where)
        keep, targets = keep[mask], new_ids
        strat = targets
    chosen = subsample(len(keep), options.n, y=strat, seed=options.seed, where=where)
    keep, targets = keep[chosen], targets[chosen]
    strat = None if strat is None else targets
    if split_of is not None:
        assignment = _split_assignment(split_of, where)[keep]
        splits = {s: np.flatnonzero(assignment == s) for s in SPLIT_NAMES}
        empty = [s for s in SPLIT_NAMES if splits[s].size == 0]
        if empty:
            raise DataError(f"{where}: the {', '.join(empty)} split is empty (the source's splits "
                            "give it no sample); every split needs at least one sample.")
        meta["split_from"] = "column"
    else:
        splits = splits_for(key, source={**source, "rows": n_all}, n=len(keep), y=strat,
                            fractions=options.split, seed=options.seed)
        meta["split_from"] = "automatic"
    sub_x = x.subset(torch.as_tensor(keep)) if isinstance(x, LazyInputs) else (
        x if len(keep) == n_all else x[torch.as_tensor(keep)])
    y_tensor = torch.as_tensor(targets)
    shape = tuple(sub_x.shape[1:])
    modality = infer_modality(shape, options.modality, where)
    if kind == "classification" and len(names) < 2:
        raise DataError(f"{where}: the labels hold {len(names)} class ({', '.join(names)}); a "
                        "classification needs at least two. Give a label list with `labels`, or "
                        "check the label column.")
    task = Task(kind, names, name=name)
    domain = Domain(options.domain or name, modality, shape)
    meta.update({"n": len(keep), "seed": options.seed, "split": list(options.split)})
    return assemble(name, task, domain, sub_x, y_tensor, splits, meta)


def require_labels(problem: Problem, role: str, why: str) -> None:
    """Raise :class:`DataError` when ``problem`` is unlabelled and ``why`` needs labels.

    ``why`` names what needs them (a route and the step that reads them), said in the message
    with where unlabelled data is taken instead."""
    if problem.meta.get("unlabelled"):
        file = problem.meta.get("file")
        because = problem.meta.get("unlabelled_because")
        named = f"'{problem.name}'" + (f" ({file}" + (f": {because}" if because else "") + ")"
                                       if file else "")
        raise DataError(f"{role}: {named} holds no labels, but {why} needs them. Give the "
                        "labels (a label column, class folders, y arrays), or use it where "
                        "none are needed: the target of unsupervised Domain Adaptation "
                        "(target_labels 0, label-free selection) or `tlroutes inspect`.")
