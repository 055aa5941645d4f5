"""Tables as problems: CSV, TSV and Parquet files, and pandas DataFrames.

One row is one sample. Columns play these parts (:class:`Columns`):

- ``label``: the target (default: the column named ``label``); class names or ids, or numbers for
  a regression (``task: regression``). A table with neither is **unlabelled** when the data
  block declares its classes (``labels: [...]``; see :mod:`~tlroutes.data.sources.build`);
- ``features``: the numeric inputs (default: every other column), read into memory as a float
  tensor ``(N, D)`` — a tabular domain;
- ``text``: instead of features, one text column, tokenised by the trunk's tokenizer into ids
  ``(N, text_length)`` — a text domain;
- ``split_column``: each row's split (``train``/``val``/``test``; default: the column named
  ``split``, when there is one); without one the rows are split automatically
  (:mod:`~tlroutes.data.sources.splitting`);
- ``domain_column`` + ``domain_value``: one table holding several domains (a site, an island
  column; default: the column named ``domain``, when there is one); the problem takes the rows
  of one value (a column of one value needs none). A separate pair of fields, not ``domain:``,
  because ``domain:`` already names the problem's domain; here the value names it by default.

Every column a run file names is checked: a missing or misspelt one is a
:class:`~tlroutes.errors.DataError` suggesting the near miss; NaN features and non-numeric
feature columns are errors naming the column and the first rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlroutes.data.sources.build import SourceOptions, build_problem
from tlroutes.errors import DataError, did_you_mean, require_extra, shorten
from tlroutes.problem import Problem

__all__ = ["DEFAULT_DOMAIN_COLUMN", "DEFAULT_SPLIT_COLUMN", "TABLE_SUFFIXES", "Columns",
           "frame_problem", "read_table", "with_default_columns"]

#: File suffixes read as tables.
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".tab", ".parquet", ".pq")


@dataclass(frozen=True)
class Columns:
    """Which columns of a table play which part (see module doc). Defaults: none named."""

    label: str | None = None
    features: Sequence[str] | None = None
    text: str | None = None
    text_length: int = 64
    split_column: str | None = None
    domain_column: str | None = None
    domain_value: str | int | None = None


#: The columns read as a table's split and domain columns when the data block names none.
DEFAULT_SPLIT_COLUMN = "split"
DEFAULT_DOMAIN_COLUMN = "domain"


def with_default_columns(cols: Columns, columns: Sequence[Any]) -> Columns:
    """``cols`` with the one rule for split and domain columns, for every table (CSV, TSV,
    Parquet, a ``datasets`` folder, an image list): ``split_column`` defaults to the column named
    ``split`` and ``domain_column`` to the column named ``domain``, when the table has one; a
    named column is used as named."""
    names = {str(c) for c in columns}
    split = cols.split_column or (DEFAULT_SPLIT_COLUMN if DEFAULT_SPLIT_COLUMN in names
                                  and cols.label != DEFAULT_SPLIT_COLUMN else None)
    domain = cols.domain_column or (DEFAULT_DOMAIN_COLUMN if DEFAULT_DOMAIN_COLUMN in names
                                    and cols.label != DEFAULT_DOMAIN_COLUMN else None)
    return replace(cols, split_column=split, domain_column=domain)


def read_table(path: str | Path) -> Any:
    """The table at ``path`` as a pandas DataFrame (CSV, TSV or Parquet, by suffix).

    Raises:
        DataError: the file is missing, unreadable or empty.
    """
    pd = require_extra("pandas", "data", "Reading a table")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            require_extra("pyarrow", "data", "Reading a Parquet table")
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="," if suffix == ".csv" else "\t")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path} as a {suffix[1:]} table: "
                        f"{shorten(str(exc), 200)}") from exc
    except Exception as exc:  # pandas' and pyarrow's parser errors have no common base
        raise DataError(f"Cannot read {path} as a {suffix[1:]} table: "
                        f"{shorten(str(exc), 200)}") from exc
    if frame.shape[0] == 0:
        raise DataError(f"{path} holds no rows.")
    return frame


def _check_column(frame: Any, column: str, field: str, where: str) -> None:
    if column not in frame.columns:
        names = [str(c) for c in frame.columns]
        raise DataError(f"{where}: `{field}` names column {shorten(column, quote=True)}, which "
                        f"the table lacks (columns: {shorten(', '.join(names), 300)})."
                        f"{did_you_mean(column, names)}")


def _rows(index: Any, mask: np.ndarray) -> str:
    rows = [str(index[i]) for i in np.flatnonzero(mask)[:5]]
    return ", ".join(rows) + (", …" if int(mask.sum()) > 5 else "")


def _domain_rows(frame: Any, cols: Columns, where: str) -> Any:
    column = cols.domain_column
    _check_column(frame, column, "domain_column", where)
    values = frame[column]
    found = sorted({str(v) for v in values.dropna().unique()})
    if cols.domain_value is None and len(found) == 1:
        return frame  # one domain: nothing to choose
    if cols.domain_value is None:
        raise DataError(f"{where}: domain_column '{column}' holds domains "
                        f"{shorten(found)}; pick this problem's with `domain_value`.")
    wanted = str(cols.domain_value)
    as_text = values.astype(str)
    mask = as_text == wanted
    if not mask.any() and values.dtype.kind in "iuf":
        with contextlib.suppress(ValueError):
            mask = values == float(wanted)
    if not mask.any():
        raise DataError(f"{where}: domain_value {shorten(cols.domain_value, quote=True)} is not "
                        f"in column '{column}' (values: {shorten(found)})."
                        f"{did_you_mean(wanted, found)}")
    return frame[mask.to_numpy()]


def _feature_tensor(frame: Any, features: Sequence[str], where: str) -> torch.Tensor:
    pd = require_extra("pandas", "data", "Reading a table")
    bad = [c for c in features
           if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]
    if bad:
        shown = ", ".join(f"'{c}' ({frame[c].dtype})" for c in bad[:8])
        raise DataError(
            f"{where}: feature column(s) {shown} are not numeric. Encode them as numbers "
            "(one-hot: pandas.get_dummies), drop them with `features: [...]`, or name a text "
            "column with `text:`.")
    values = frame[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        column = int(np.flatnonzero(~finite.all(axis=0))[0])
        rows = ~finite[:, column]
        others = int((~finite.all(axis=0)).sum()) - 1
        more = f" (and {others} more column(s))" if others else ""
        raise DataError(
            f"{where}: feature column '{features[column]}' has {int(rows.sum())} missing or "
            f"infinite value(s), at row(s) {_rows(frame.index, rows)}{more}. Fill or drop them, "
            "or leave the column out of `features`.")
    return torch.as_tensor(values.astype(np.float32))


def frame_problem(
    frame: Any,
    cols: Columns,
    options: SourceOptions,
    *,
    name: str,
    where: str,
    key: str,
    source: Mapping[str, Any],
    tokenize: Callable[[list[str], int], torch.Tensor] | None = None,
    label_names: Sequence[str] | None = None,
) -> Problem:
    """A :class:`Problem` from a DataFrame whose columns play the parts ``cols`` says.

    Args:
        frame: the table (pandas DataFrame).
        cols: the columns' parts (:class:`Columns`).
        options: the declared task, labels, classes, n, split, seed, modality.
        name, where, key, source: the problem's name; the table as errors name it; its key and
            fingerprint for the kept splits.
        tokenize: ``(texts, length) -> ids (N, length)``, needed with ``cols.text``.
        label_names: the label column's own class names when the source has them (a
            ``datasets`` ClassLabel), used unless ``options.labels`` is given.
    """
    cols = with_default_columns(cols, list(frame.columns))
    if cols.domain_column is not None:
        frame = _domain_rows(frame, cols, where)
    elif cols.domain_value is not None:
        raise DataError(f"{where}: domain_value needs domain_column, the column it is a value "
                        "of.")
    label = cols.label
    if label is None and "label" in frame.columns:
        label = "label"
    if label is not None:
        _check_column(frame, label, "label", where)
    elif not options.labels and options.task in (None, "classification"):
        # No label column and no label list: most likely a forgotten `label:`, said as such.
        raise DataError(
            f"{where}: no `label` column is named and the table has none called 'label' "
            f"(columns: {shorten(', '.join(map(str, frame.columns)), 300)}); set `label:` to "
            "the target column. For an unlabelled table (a Domain Adaptation target) give the "
            "classes it is predicted over as `labels: [...]` instead.")
    for field_name in ("text", "split_column"):
        column = getattr(cols, field_name)
        if column is not None:
            _check_column(frame, column, field_name, where)
    taken = {label, cols.text, cols.split_column, cols.domain_column} - {None}
    if cols.text is not None:
        if cols.features is not None:
            raise DataError(f"{where}: give `text` or `features`, not both: a problem has one "
                            "kind of input.")
        if tokenize is None:
            raise DataError(f"{where}: the text column '{cols.text}' needs a tokenizer; use the "
                            "trunk minilm_l6 (whose tokenizer reads it), or tokenise the texts "
                            "yourself into an .npz of token ids with `modality: text`.")
        texts = frame[cols.text]
        missing = texts.isna().to_numpy()
        if missing.any():
            raise DataError(f"{where}: text column '{cols.text}' has {int(missing.sum())} empty "
                            f"value(s), at row(s) {_rows(frame.index, missing)}.")
        x = tokenize([str(t) for t in texts.tolist()], cols.text_length)
        options.modality = "text"
    else:
        features = list(cols.features) if cols.features is not None else [
            c for c in frame.columns if c not in taken]
        for column in features:
            _check_column(frame, column, "features", where)
        clash = [c for c in features if c in taken]
        if clash:
            raise DataError(f"{where}: column(s) {', '.join(map(repr, clash))} are both a feature "
                            "and the label, text, split or domain column; leave them out of "
                            "`features`.")
        if not features:
            raise DataError(f"{where}: no feature column is left besides the label; name the "
                            "inputs with `features: [...]`.")
        x = _feature_tensor(frame, features, where)
        options.meta.setdefault("features", [str(c) for c in features])
    if options.labels is None and label_names is not None:
        options.labels = list(label_names)
    if options.domain is None and cols.domain_value is not None:
        options.domain = str(cols.domain_value)
    split_of = frame[cols.split_column] if cols.split_column is not None else None
    if label is None:
        options.meta.setdefault("unlabelled_because", "the table has no label column")
        return build_problem(name, x, None, options, where=f"{where} (no label column)", key=key,
                             source=source, split_of=split_of)
    return build_problem(name, x, frame[label], options, where=f"{where}, column '{label}'",
                         key=key, source=source, split_of=split_of)
