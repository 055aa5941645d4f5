"""Class labels and task kinds read safely from a user's targets.

Every source (tables, ``.npz``, image folders, Hugging Face ``datasets``, Python objects) turns
its label column into class ids here, so that one rule holds everywhere:

- :func:`encode_labels`: string, integer or boolean labels → ``int64`` ids plus the label names
  kept. Without a declared label list the names are the sorted distinct values (integers sorted
  numerically, named by their ``str``). With one, strings are matched by name and integers are
  class ids into it (the convention of ``.npz`` files, scikit-learn and torchvision: ``y`` holds
  ids, ``labels`` their names). Missing labels, mixed types and unknown values are one
  :class:`~tlroutes.errors.DataError` naming where.
- :func:`infer_task_kind`: the task kind a target supports — never a classification of a
  real-valued target without being told.
- :func:`select_classes`: keep only some classes (by name or id), renumbered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tlroutes.errors import DataError, did_you_mean, shorten
from tlroutes.problem import TASK_KINDS

__all__ = ["encode_labels", "infer_task_kind", "select_classes", "to_numpy"]

#: Values named in a message before "…".
_SHOWN = 5


def to_numpy(values: Any) -> np.ndarray:
    """``values`` (numpy array, list, tuple, pandas Series, torch tensor) as a numpy array.

    Strings and mixed values become an object array; a pandas Series with missing values keeps
    them as ``None`` / NaN (read by :func:`encode_labels` as missing).
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor
        return values.detach().cpu().numpy()
    if hasattr(values, "to_numpy"):  # pandas Series / Index
        array = values.to_numpy()
        # pandas' nullable and string dtypes come out as object arrays holding pd.NA
        return array
    if isinstance(values, np.ndarray):
        return values
    values = list(values)
    if values and all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=object)
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        array = np.asarray(values, dtype=object)
    # np.asarray(["a", 1]) makes every value a string, hiding the mixture
    if array.dtype.kind in "USO" and not all(isinstance(v, str) for v in values):
        array = np.empty(len(values), dtype=object)
        array[:] = values
    return array


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    # pandas.NA and NaT compare as neither equal nor unequal to themselves
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r)) for r in rows[:_SHOWN])
    return shown + (", …" if rows.size > _SHOWN else "")


def _kind_of(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str | np.str_):
        return "str"
    return type(value).__name__


def _check_missing(array: np.ndarray, where: str) -> None:
    if array.dtype.kind == "f":
        missing = ~np.isfinite(array)
    elif array.dtype.kind == "O":
        missing = np.fromiter((_is_missing(v) for v in array), bool, count=array.size)
    else:
        return
    if missing.any():
        raise DataError(
            f"{where}: {int(missing.sum())} label(s) are missing (NaN, None or infinite), first "
            f"at row(s) {_rows(missing)}; give every sample a label or drop those rows.")


def _value_kind(array: np.ndarray, where: str) -> str:
    """``"int"``, ``"float"``, ``"str"`` or ``"bool"``: the one kind of value in ``array``."""
    kind = array.dtype.kind
    if kind == "b":
        return "bool"
    if kind in "iu":
        return "int"
    if kind == "f":
        return "float"
    if kind in "US":
        return "str"
    if kind != "O":
        raise DataError(f"{where}: labels of dtype {array.dtype} cannot be class labels; use "
                        "integers or strings.")
    kinds = [_kind_of(v) for v in array]
    found = sorted(set(kinds))
    if len(found) == 1 and found[0] in ("int", "float", "str", "bool"):
        return found[0]
    if set(found) <= {"int", "float"}:
        return "float"
    examples = []
    for k in found:
        first = kinds.index(k)
        examples.append(f"{k} at row {first} ({shorten(array[first], quote=True)})")
    raise DataError(
        f"{where}: the labels mix types — {'; '.join(examples)}. One column holds one kind of "
        "label: make them all strings or all integers.")


def _whole(array: np.ndarray, where: str) -> np.ndarray:
    values = array.astype(np.float64)
    bad = (values != np.round(values)) | (np.abs(values) >= 2**31)
    if bad.any():
        shown = ", ".join(f"{v:g}" for v in np.unique(values[bad])[:_SHOWN])
        raise DataError(
            f"{where}: {int(bad.sum())} class label(s) are not whole numbers (e.g. {shown}), "
            f"first at row(s) {_rows(bad)}. For a real-valued target set `task: regression`.")
    return values.astype(np.int64)


def _per_group(values: np.ndarray, bad: np.ndarray, groups: np.ndarray | None,
               shown: list[Any], *, quote: bool = False) -> str:
    """``"3: 1 in train, 1 in val; 4: 2 in train"``: samples per value (per split when
    ``groups`` gives each row's split)."""
    parts = []
    for v in shown:
        rows = bad & (values == v)
        name = shorten(v, quote=True) if quote else str(v)
        if groups is None:
            parts.append(f"{name}: {int(rows.sum())}")
            continue
        names, counts = np.unique(groups[rows].astype(str), return_counts=True)
        order = {n: i for i, n in enumerate(("train", "val", "test"))}
        pairs = sorted(zip(names.tolist(), counts.tolist(), strict=True),
                       key=lambda p: order.get(p[0], 3))
        parts.append(f"{name}: " + ", ".join(f"{c} in {n}" for n, c in pairs))
    return "; ".join(parts)


def _contradiction(array: np.ndarray, bad: np.ndarray, declared: tuple[str, ...],
                   groups: np.ndarray | None, where: str) -> DataError:
    """The declared list does not name class ids that samples carry: which ids, how many
    samples of each (per split), the names given, and what to do."""
    outside = sorted(int(v) for v in np.unique(array[bad]))
    k = len(declared)
    named = ", ".join(f"{i}: {n}" for i, n in enumerate(declared[:8])) + (", …" if k > 8 else "")
    counted = _per_group(array, bad, groups, outside[:6]) + ("; …" if len(outside) > 6 else "")
    negative = [v for v in outside if v < 0]
    fix = (f"labels must be class indices 0, 1, 2, …; renumber the negative ones ({negative})"
           if negative else
           f"add a name for each missing index to `labels` (it needs {max(outside) + 1} names, "
           "in index order), or drop those samples")
    noun = "index" if len(outside) == 1 else "indices"
    split = " per split" if groups is not None else ""
    return DataError(
        f"{where}: `labels` names {k} classes ({named}) but the data hold class {noun} "
        f"{', '.join(map(str, outside[:6]))} it has no name for (samples{split} — {counted}; "
        f"first at row(s) {_rows(bad)}). The declared list contradicts the labels present: "
        f"{fix}.")


def encode_labels(
    values: Any, *, names: Sequence[str] | None = None, where: str, groups: Any | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class labels → ``int64`` class ids and the label names kept.

    Args:
        values: one label per sample — a numpy array, list, tuple, pandas Series or torch
            tensor of strings, integers, booleans or whole-number floats (``3.0``).
        names: a declared label list. None (default): the names are the sorted distinct values
            (integers sorted numerically and named by their ``str``; booleans ``False``,
            ``True``), and ids index them. Given: string labels are matched by name and integer
            labels are class ids into ``names`` (``y == 2`` is ``names[2]``); every class of
            ``names`` is kept, with or without samples.
        where: what the labels are (a file and column), named in every error.
        groups: each sample's split (``train``/``val``/``test``) when the source gives them
            (pre-split archives, a split column), to count the samples a contradiction is about
            per split; None (default) counts them in all.

    Returns:
        ``(ids, names)``: ``ids`` of shape ``(N,)`` with values in ``[0, len(names))``.

    Raises:
        DataError: a label is missing (NaN, None), labels mix types, a float label is not a
            whole number, a value is not in ``names``, or ``names`` repeats a name.
    """
    array = to_numpy(values)
    if array.ndim != 1:
        raise DataError(f"{where}: class labels must be one value per sample (shape (N,)), got "
                        f"shape {tuple(array.shape)}.")
    _check_missing(array, where)
    kind = _value_kind(array, where) if array.size else "int"
    if kind == "float":
        array, kind = _whole(array, where), "int"
    elif kind == "int":
        array = array.astype(np.int64)
    elif kind == "bool":
        array = array.astype(bool)
    else:
        array = array.astype(str).astype(object)
    if names is None:
        distinct = np.unique(array)
        ids = np.searchsorted(distinct, array).astype(np.int64)
        return ids, tuple(str(v) for v in distinct.tolist())
    declared = tuple(str(n) for n in names)
    twice = sorted({n for n in declared if declared.count(n) > 1})
    if twice:
        # Classes are matched by name across problems (Domain Adaptation's label sets), so a
        # repeated name would make two classes one.
        at = "; ".join(f"{n!r} at positions "
                       f"{', '.join(str(i) for i, m in enumerate(declared) if m == n)}"
                       for n in twice[:3])
        raise DataError(f"{where}: the label list repeats names ({at}); each class needs a name "
                        "of its own.")
    split_of = None if groups is None else to_numpy(groups)
    if kind == "int":
        bad = (array < 0) | (array >= len(declared))
        if bad.any():
            raise _contradiction(array, bad, declared, split_of, where)
        return array.astype(np.int64), declared
    keys = array.astype(str) if kind == "bool" else array
    position = {n: i for i, n in enumerate(declared)}
    ids = np.fromiter((position.get(str(v), -1) for v in keys), np.int64, count=keys.size)
    bad = ids < 0
    if bad.any():
        unknown = sorted({str(v) for v in keys[bad]})
        text = keys.astype(str)
        counted = _per_group(text, bad, split_of, unknown[:_SHOWN], quote=True)
        more = f"; and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        split = " per split" if split_of is not None else ""
        raise DataError(
            f"{where}: {int(bad.sum())} label(s) are present but not in the declared label list "
            f"{shorten(list(declared))} (samples{split} — {counted}{more}; first at row(s) "
            f"{_rows(bad)}). Add them to the list, fix their spelling, or drop those rows."
            f"{did_you_mean(unknown[0], declared)}")
    return ids, declared


def infer_task_kind(values: Any, *, declared: str | None, where: str) -> str:
    """The task kind of targets ``values``: the declared one, checked, or one read safely.

    Args:
        values: the targets, ``(N,)`` or ``(N, K)``.
        declared: ``"classification"``, ``"multilabel"`` or ``"regression"`` as the run file's
            ``task:`` says; None when it says nothing.
        where: named in errors.

    Returns:
        Integers, strings and booleans ``(N,)`` are a classification. Float targets are never
        classified silently: without a declared kind they are a :class:`DataError` that says to
        set ``task: regression`` (or ``classification`` when whole-number floats are class ids).
        Targets of shape ``(N, K)`` need a declared ``multilabel`` or ``regression``.

    Raises:
        DataError: as above; also a declared kind the targets cannot be (strings as a
            regression), or an unknown kind.
    """
    if declared is not None and declared not in TASK_KINDS:
        raise DataError(f"{where}: task kind '{declared}' is unknown; use one of "
                        f"{', '.join(TASK_KINDS)}.")
    array = to_numpy(values)
    kind = "str" if array.dtype.kind in "US" else array.dtype.kind
    if array.dtype.kind == "O" and array.size:
        _check_missing(array, where)
        kind = {"str": "str", "int": "i", "bool": "b", "float": "f"}[_value_kind(array, where)]
    if declared is not None:
        if declared in ("regression", "multilabel") and kind == "str":
            raise DataError(f"{where}: the targets are strings, which cannot be a {declared} "
                            "target; set `task: classification` or give numbers.")
        return declared
    if array.ndim == 2 and array.shape[1] != 1:
        raise DataError(
            f"{where}: targets of shape {tuple(array.shape)} (several per sample) need their "
            "kind: set `task: multilabel` (0/1 columns) or `task: regression` (real values).")
    if kind in ("str", "i", "u", "b"):
        return "classification"
    if kind == "f":
        flat = array.reshape(-1).astype(np.float64)
        finite = flat[np.isfinite(flat)]
        if finite.size and bool((finite == np.round(finite)).all()):
            shown = ", ".join(f"{v:g}" for v in np.unique(finite)[:_SHOWN])
            raise DataError(
                f"{where}: the targets are floats holding whole numbers ({shown}, …), which could "
                "be class ids or real values; set `task: classification` or `task: regression`.")
        shown = ", ".join(f"{v:g}" for v in finite[:3])
        raise DataError(
            f"{where}: the targets are real numbers (e.g. {shown}); tlroutes never makes them "
            "classes silently. Set `task: regression` (or "
            "`task: classification` with integer or string labels).")
    raise DataError(f"{where}: targets of dtype {array.dtype} fit no task kind; give integers, "
                    "strings or floats.")


def select_classes(
    ids: np.ndarray, names: Sequence[str], keep: Sequence[str | int], *, where: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Keep only the classes ``keep`` (names, or integer ids into ``names``), renumbered.

    Args:
        ids: class ids ``(N,)`` into ``names``.
        names: the label names.
        keep: the classes to keep, in the order they take: ``["cat", "dog"]`` or ``[0, 3]``.
            An integer that is also a name (labels ``"0"``, ``"1"``) is read as the name.
        where: named in errors.

    Returns:
        ``(mask, new_ids, new_names)``: ``mask`` selects the kept samples of the original
        ``ids``, ``new_ids`` are their ids into ``new_names``.

    Raises:
        DataError: a class is unknown (the near miss is suggested), repeated, or fewer than two
            are kept.
    """
    from tlroutes.errors import did_you_mean

    names = tuple(names)
    chosen: list[int] = []
    for item in keep:
        if str(item) in names:
            index = names.index(str(item))
        elif isinstance(item, int | np.integer) and not isinstance(item, bool) \
                and 0 <= int(item) < len(names):
            index = int(item)
        else:
            raise DataError(f"{where}: `classes` names {shorten(item, quote=True)}, which is not "
                            f"a class here (classes: {shorten(list(names))})."
                            f"{did_you_mean(str(item), names)}")
        if index in chosen:
            raise DataError(f"{where}: `classes` names class '{names[index]}' twice.")
        chosen.append(index)
    if len(chosen) < 2:
        raise DataError(f"{where}: `classes` keeps {len(chosen)} class(es); a classification "
                        "needs at least two.")
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[chosen] = np.arange(len(chosen))
    new = remap[ids]
    mask = new >= 0
    return mask, new[mask], tuple(names[i] for i in chosen)
