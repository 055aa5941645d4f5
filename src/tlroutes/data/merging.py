"""Dataset Merging building blocks: label-space harmonisation and cross-dataset leakage checks.

Two datasets of the same task and domain trained on at once rarely agree on their labels
("cat" vs "Cat" vs "domestic_cat"), and scraped data often contains copies of some other
dataset's test images. This module handles both, as plain functions on
:class:`~tlroutes.problem.Problem` and tensors, usable outside the tlroutes training loop. The
mixing of the merged datasets into one stream is :mod:`tlroutes.data.mixing`.

**Label maps.** :func:`load_label_map` reads a CSV or TSV file with a header row naming the
columns ``dataset``, ``label`` and ``merged`` (any order, any case; other columns such as
``note`` are ignored)::

    dataset,label,merged
    web,tabby,cat
    web,siamese,cat          # many-to-one
    web,blurry,DROP          # samples with this label are removed, on purpose
    lab,Cat,cat
    lab,Dog,dog

A ``merged`` value of ``DROP`` (any case) drops that label's samples; an empty ``merged`` cell is
an error (write ``DROP`` to drop, so that nothing is dropped by accident). Blank lines and lines
whose first cell starts with ``#`` are skipped. The merged label set is ordered by **first
appearance in the file** (so the file decides the order of the classes, and the head's output
``k`` is the ``k``-th distinct merged label). :meth:`LabelMap.apply` remaps one dataset; every
label the dataset's task declares must have a row, else :class:`~tlroutes.errors.DataError`.

**Leakage.** :func:`find_duplicates` finds exact and near-duplicate samples between two tensors;
:func:`leakage_report` checks the train split of every dataset against the validation and test
splits of every *other* dataset (and, reported separately, of itself), and can remove the
leaking train samples.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import torch
from torch import Tensor

from tlroutes.errors import DataError, did_you_mean
from tlroutes.problem import Problem, Split, Task

#: The ``merged`` value that drops a label's samples.
DROP = "DROP"
#: The columns a label-map file must name in its header row.
LABEL_MAP_COLUMNS = ("dataset", "label", "merged")
#: Default threshold of :func:`find_duplicates` on the cosine similarity of standardised inputs.
DEFAULT_THRESHOLD = 0.99
#: Default number of decimals inputs are rounded to before exact duplicates are hashed.
DEFAULT_DECIMALS = 4


# ---------------------------------------------------------------------------------- label maps
@dataclass(frozen=True)
class LabelMap:
    """How the labels of several datasets map onto one merged label set.

    Made by :func:`load_label_map`; fields are read-only.

    Attributes:
        path: the file it was read from (shown in error messages).
        mapping: ``{(dataset, label): merged label, or None to drop}``.
        labels: the merged labels, in order of first appearance in the file.
        task: the merged classification :class:`~tlroutes.problem.Task` (``labels`` as above),
            the same object for every dataset, so that mapped problems can be concatenated.
    """

    path: str
    mapping: Mapping[tuple[str, str], str | None]
    labels: tuple[str, ...]
    task: Task

    @property
    def datasets(self) -> tuple[str, ...]:
        """The dataset names the file mentions, in order of first appearance."""
        return tuple(dict.fromkeys(d for d, _ in self.mapping))

    def targets(self, dataset: str) -> dict[str, str | None]:
        """``{label: merged label or None (dropped)}`` for one dataset."""
        self._check_dataset(dataset)
        return {label: m for (d, label), m in self.mapping.items() if d == dataset}

    def _check_dataset(self, dataset: str) -> None:
        if dataset not in self.datasets:
            raise DataError(
                f"dataset '{dataset}' does not appear in label map {self.path} (it maps "
                f"{', '.join(repr(d) for d in self.datasets)})."
                + did_you_mean(dataset, self.datasets)
                + f" Add rows '{dataset},<label>,<merged label>' for its labels."
            )

    def apply(self, dataset: str, problem: Problem) -> Problem:
        """``problem`` with every split's labels remapped onto the merged label set.

        Rows for labels the task does not declare are ignored (a file may cover more classes
        than were loaded). Samples whose label maps to ``DROP`` are removed from every split; the
        inputs and the domain are unchanged; ``meta["label_map"]`` records the file and the
        number of samples dropped per split.

        Args:
            dataset: the dataset's name in the file's ``dataset`` column.
            problem: a classification problem whose task declares the labels (by name).

        Raises:
            DataError: the dataset is not in the file; the task is not classification; a label
                the task declares has no row (the message names them and the rows to add); a
                split has no samples left after dropping.
        """
        self._check_dataset(dataset)
        if problem.task.kind != "classification":
            raise DataError(
                f"label map {self.path} applies to classification problems; problem "
                f"'{problem.name}' (dataset '{dataset}') is {problem.task.kind}."
            )
        targets = self.targets(dataset)
        unmapped = [label for label in problem.task.labels if label not in targets]
        if unmapped:
            unused = [label for label in targets if label not in problem.task.labels]
            hints = "".join(did_you_mean(label, unused) for label in unmapped[:3])
            rows = "; ".join(f"'{dataset},{label},<merged label>'" for label in unmapped[:3])
            raise DataError(
                f"dataset '{dataset}' has label(s) {', '.join(repr(x) for x in unmapped)} that "
                f"label map {self.path} does not map. Add a row for each ({rows}), or map it to "
                f"{DROP} to drop its samples ('{dataset},{unmapped[0]},{DROP}')." + hints
            )
        index = {label: k for k, label in enumerate(self.labels)}
        lookup = torch.tensor(
            [
                -1 if targets[label] is None else index[targets[label]]
                for label in problem.task.labels
            ],
            dtype=torch.long,
        )
        splits, dropped = {}, {}
        for split_name, split in problem.splits().items():
            new_y = lookup.to(split.y.device)[split.y.long()]
            keep = new_y >= 0
            dropped[split_name] = int((~keep).sum())
            if dropped[split_name] == 0:
                splits[split_name] = Split(split.x, new_y)
                continue
            if not bool(keep.any()):
                gone = [label for label in problem.task.labels if targets[label] is None]
                raise DataError(
                    f"dataset '{dataset}': every sample of its {split_name} split has a label "
                    f"that label map {self.path} drops ({', '.join(gone)}); map at least one of "
                    f"its labels to a merged label."
                )
            where = keep.nonzero().squeeze(1)
            splits[split_name] = Split(split.x[where], new_y[where])
        meta = {**problem.meta, "label_map": {"file": self.path, "dropped": dropped}}
        return replace(problem, task=self.task, meta=meta, **splits)

    def apply_all(self, problems: Mapping[str, Problem]) -> dict[str, Problem]:
        """:meth:`apply` to each ``{dataset name: problem}``; the file must name exactly those.

        Raises:
            DataError: the file names a dataset not among ``problems`` (or the other way round),
                and every error :meth:`apply` raises.
        """
        extra = [d for d in self.datasets if d not in problems]
        if extra:
            raise DataError(
                f"label map {self.path} names dataset(s) {', '.join(repr(d) for d in extra)} "
                f"that are not among the datasets being merged ({', '.join(problems)})."
                + did_you_mean(extra[0], problems)
                + " Rename them in the file or remove their rows."
            )
        return {name: self.apply(name, problem) for name, problem in problems.items()}


def load_label_map(
    path: str | Path,
    *,
    datasets: Iterable[str] | None = None,
    task_name: str = "merged",
) -> LabelMap:
    """Read a label-map file (CSV or TSV; format in the module doc).

    The delimiter comes from the extension (``.csv`` → comma; ``.tsv`` / ``.tab`` → tab);
    otherwise it is the one of tab, comma and semicolon that splits the header row into the
    required columns. The file is read as
    UTF-8 (a byte-order mark is allowed); cells are stripped of surrounding spaces.

    Args:
        path: the file.
        datasets: when given, the dataset names allowed in the file; any other name is an error
            (catches typos early). Default None: any name.
        task_name: the name of the merged task. Default ``"merged"``.

    Raises:
        DataError: the file is missing or unreadable; no header row naming ``dataset``,
            ``label`` and ``merged``; a row with an empty cell or too few cells; the same
            ``(dataset, label)`` mapped to two different merged labels (both lines are named);
            an unknown dataset name; fewer than two merged labels.
    """
    path = Path(path)
    where = f"label map {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{where} does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where} cannot be read as UTF-8 text: {exc}") from None
    rows = [
        (line, [cell.strip() for cell in row])
        for line, row in enumerate(csv.reader(text.splitlines(), _dialect(path, text)), 1)
        if any(cell.strip() for cell in row) and not row[0].strip().startswith("#")
    ]
    if not rows:
        raise DataError(
            f"{where} is empty; it needs a header row '{','.join(LABEL_MAP_COLUMNS)}' and one "
            "row per (dataset, label)."
        )
    header_line, header = rows[0]
    names = [h.lower() for h in header]
    missing = [c for c in LABEL_MAP_COLUMNS if c not in names]
    if missing:
        raise DataError(
            f"{where}, line {header_line}: the first row must be a header naming the columns "
            f"{', '.join(LABEL_MAP_COLUMNS)} (found {header}; missing {', '.join(missing)}). "
            f"Add the header line '{','.join(LABEL_MAP_COLUMNS)}'."
        )
    col = {c: names.index(c) for c in LABEL_MAP_COLUMNS}
    allowed = None if datasets is None else list(datasets)
    mapping: dict[tuple[str, str], str | None] = {}
    first_line: dict[tuple[str, str], int] = {}
    merged_labels: dict[str, None] = {}
    for line, row in rows[1:]:
        if len(row) <= max(col.values()):
            raise DataError(
                f"{where}, line {line}: expected {len(header)} cells "
                f"({', '.join(header)}), got {len(row)}: {row}."
            )
        dataset, label, merged = (row[col[c]] for c in LABEL_MAP_COLUMNS)
        if not dataset or not label:
            raise DataError(f"{where}, line {line}: the dataset and label cells must not be empty.")
        if not merged:
            raise DataError(
                f"{where}, line {line}: no merged label for '{dataset}' label '{label}'. Write "
                f"the merged label, or {DROP} to drop its samples."
            )
        if allowed is not None and dataset not in allowed:
            raise DataError(
                f"{where}, line {line}: dataset '{dataset}' is unknown; the datasets being "
                f"merged are {', '.join(allowed)}." + did_you_mean(dataset, allowed)
            )
        target = None if merged.upper() == DROP else merged
        key = (dataset, label)
        if key in mapping:
            if mapping[key] != target:
                raise DataError(
                    f"{where}: '{dataset}' label '{label}' is mapped twice, to "
                    f"'{mapping[key] or DROP}' (line {first_line[key]}) and to '{merged}' "
                    f"(line {line}); keep one of the two rows."
                )
            continue
        mapping[key], first_line[key] = target, line
        if target is not None:
            merged_labels.setdefault(target)
    labels = tuple(merged_labels)
    if len(labels) < 2:
        raise DataError(
            f"{where} maps onto {len(labels)} merged label(s) {list(labels)}; a classification "
            "task needs at least two."
        )
    return LabelMap(
        path=str(path),
        mapping=MappingProxyType(mapping),
        labels=labels,
        task=Task("classification", labels=labels, name=task_name),
    )


def _dialect(path: Path, text: str) -> type[csv.Dialect] | csv.Dialect:
    """The CSV dialect: from the extension, else the delimiter that splits the header into the
    required columns, else whatever :class:`csv.Sniffer` finds, else comma."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return csv.excel
    if suffix in (".tsv", ".tab"):
        return csv.excel_tab
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        return csv.excel
    for delimiter in ("\t", ",", ";"):
        cells = {cell.strip().lower() for cell in lines[0].split(delimiter)}
        if set(LABEL_MAP_COLUMNS) <= cells:
            return _Delimited(delimiter)
    try:
        return csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",\t;")
    except csv.Error:
        return csv.excel


class _Delimited(csv.excel):
    def __init__(self, delimiter: str) -> None:
        super().__init__()
        self.delimiter = delimiter


# ---------------------------------------------------------------------------------- duplicates
@dataclass
class Duplicates:
    """Pairs of duplicate samples between two tensors ``a`` and ``b`` (see :func:`find_duplicates`).

    Attributes:
        pairs: long ``(K, 2)``: row ``(i, j)`` says ``a[i]`` duplicates ``b[j]``; sorted by
            ``i`` then ``j``.
        similarity: float ``(K,)``: the cosine similarity of the standardised samples (0 for
            constant samples and for integer inputs, where it is not computed).
        exact: bool ``(K,)``: True where the samples are equal after rounding.
    """

    pairs: Tensor
    similarity: Tensor
    exact: Tensor

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def n_exact(self) -> int:
        """Number of exact-duplicate pairs."""
        return int(self.exact.sum())

    @property
    def n_near(self) -> int:
        """Number of near-duplicate pairs that are not exact."""
        return len(self) - self.n_exact

    @property
    def a_indices(self) -> Tensor:
        """The distinct rows of ``a`` that have a duplicate in ``b``, sorted."""
        return self.pairs[:, 0].unique()

    @property
    def b_indices(self) -> Tensor:
        """The distinct rows of ``b`` that have a duplicate in ``a``, sorted."""
        return self.pairs[:, 1].unique()


@dataclass
class _Prepared:
    """One tensor made ready for comparisons: row hashes and standardised rows."""

    n: int
    shape: tuple[int, ...]
    hashes: list[bytes]
    unit: Tensor | None  # (n, D) float32, rows of norm 1 or 0; None for integer inputs


def _prepare(x: Tensor, decimals: int, near: bool) -> _Prepared:
    x = x.detach().cpu()
    flat = x.reshape(x.shape[0], -1)
    if flat.is_floating_point():
        # round in float64 (so float32 and float64 copies agree), then +0.0 turns -0.0 into 0.0
        rounded = torch.round(flat.double(), decimals=decimals) + 0.0
    else:
        rounded = flat.long()
    raw = rounded.contiguous().numpy()
    hashes = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in raw]
    unit = None
    if near and flat.is_floating_point():
        z = flat.float()
        z = z - z.mean(dim=1, keepdim=True)
        norm = z.norm(dim=1, keepdim=True)
        unit = torch.where(norm > 1e-8 * (1 + z.abs().amax(1, keepdim=True)), z / norm, 0.0)
    return _Prepared(int(x.shape[0]), tuple(x.shape[1:]), hashes, unit)


def _compare(a: _Prepared, b: _Prepared, threshold: float | None, chunk: int) -> Duplicates:
    table: dict[bytes, list[int]] = {}
    for j, h in enumerate(b.hashes):
        table.setdefault(h, []).append(j)
    exact = {(i, j) for i, h in enumerate(a.hashes) for j in table.get(h, ())}
    found: dict[tuple[int, int], float] = {}
    if threshold is not None and a.unit is not None and b.unit is not None and a.n and b.n:
        rows = max(1, min(a.n, chunk // max(b.n, 1)))
        bt = b.unit.t().contiguous()
        for start in range(0, a.n, rows):
            sim = a.unit[start : start + rows] @ bt
            hit = (sim >= threshold).nonzero()
            values = sim[hit[:, 0], hit[:, 1]].tolist()
            for (i, j), s in zip(hit.tolist(), values, strict=True):
                found[(start + i, j)] = s
    if exact and a.unit is not None and b.unit is not None:
        missing = [p for p in exact if p not in found]
        if missing:
            ia = torch.tensor([p[0] for p in missing])
            ib = torch.tensor([p[1] for p in missing])
            sims = (a.unit[ia] * b.unit[ib]).sum(1).tolist()
            found.update(zip(missing, sims, strict=True))
    keys = sorted(set(found) | exact)
    return Duplicates(
        pairs=torch.tensor(keys, dtype=torch.long).reshape(-1, 2),
        similarity=torch.tensor([found.get(k, 0.0) for k in keys], dtype=torch.float32),
        exact=torch.tensor([k in exact for k in keys], dtype=torch.bool),
    )


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not (-1.0 <= float(threshold) <= 1.0):
        raise DataError(
            f"threshold {threshold} is not a cosine similarity; use a value in [-1, 1] "
            "(e.g. 0.99), or None for exact duplicates only."
        )


def find_duplicates(
    a: Tensor,
    b: Tensor,
    threshold: float | None = DEFAULT_THRESHOLD,
    *,
    decimals: int = DEFAULT_DECIMALS,
    chunk_elements: int = 2**23,
) -> Duplicates:
    """Exact and near-duplicate samples between ``a`` ``(N, ...)`` and ``b`` ``(M, ...)``.

    - **Exact**: each sample is flattened, rounded to ``decimals`` decimal places (in float64, so
      float32 and float64 copies agree; integer inputs are taken as they are) and its bytes are
      hashed (BLAKE2b, 128 bits); samples with equal hashes are exact duplicates.
    - **Near**: each sample is flattened, its mean subtracted and divided by its L2 norm (so the
      cosine similarity of two samples is their Pearson correlation: unchanged by brightness and
      contrast changes). Pairs whose similarity is at least ``threshold`` are near-duplicates.
      The ``N × M`` similarities are computed in chunks of about ``chunk_elements`` entries
      (32 MiB by default), so memory stays bounded. Constant samples have no direction
      (similarity 0 with everything) and are found only when exact; for integer inputs (token
      ids) only exact duplicates are searched.

    Args:
        a, b: the two sets of samples, with the same per-sample shape.
        threshold: the near-duplicate cosine-similarity threshold in ``[-1, 1]``. Default
            0.99, about what independent noise of 14% of a sample's standard deviation leaves
            (correlation ``1 / sqrt(1 + 0.14**2)``); distinct 8×8 digits reach 0.983, so lower
            thresholds flag look-alikes on small inputs. None: exact duplicates only.
        decimals: decimal places kept before hashing. Default 4.
        chunk_elements: similarity entries computed at once. Default ``2**23``.

    Returns:
        :class:`Duplicates`, each pair ``(i, j)`` once, exact or not.

    Raises:
        DataError: the per-sample shapes differ, or the threshold is out of range.
    """
    _check_threshold(threshold)
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise DataError(
            f"find_duplicates compares samples of one shape; got per-sample shapes "
            f"{tuple(a.shape[1:])} and {tuple(b.shape[1:])}."
        )
    near = threshold is not None
    return _compare(
        _prepare(a, decimals, near), _prepare(b, decimals, near), threshold, chunk_elements
    )


# ---------------------------------------------------------------------------------- leakage
@dataclass
class LeakCheck:
    """One comparison of a leakage report: the train split of ``train`` against the ``split``
    split (``"val"`` or ``"test"``) of ``other``.

    ``duplicates`` pairs train indices of ``train`` with indices of ``other``'s ``split``;
    it is None when the check was skipped (``skipped`` says why, e.g. different input shapes).
    """

    train: str
    other: str
    split: str
    duplicates: Duplicates | None
    skipped: str = ""

    @property
    def within(self) -> bool:
        """True when the check is inside one dataset (its train against its own val / test)."""
        return self.train == self.other

    def to_dict(self) -> dict:
        d = self.duplicates
        out = {"train": self.train, "other": self.other, "split": self.split}
        if d is None:
            return {**out, "skipped": self.skipped}
        return {
            **out,
            "n_exact": d.n_exact,
            "n_near": d.n_near,
            "n_train_samples": int(d.a_indices.numel()),
            "pairs": d.pairs.tolist(),
            "exact": d.exact.tolist(),
            "similarity": [round(s, 6) for s in d.similarity.tolist()],
        }


@dataclass
class LeakageReport:
    """What :func:`leakage_report` found.

    Attributes:
        threshold: the near-duplicate threshold used (None: exact only).
        decimals: the rounding used for exact duplicates.
        checks: every comparison made, across datasets and within them.
        cleaned: with ``drop=True``, the problems with leaking train samples removed; else None.
    """

    threshold: float | None
    decimals: int
    checks: list[LeakCheck]
    cleaned: dict[str, Problem] | None = field(default=None, repr=False)

    @property
    def cross(self) -> list[LeakCheck]:
        """Checks of one dataset's train split against another dataset's val / test splits."""
        return [c for c in self.checks if not c.within]

    @property
    def within(self) -> list[LeakCheck]:
        """Checks of a dataset's train split against its own val / test splits."""
        return [c for c in self.checks if c.within]

    @property
    def has_leaks(self) -> bool:
        """True when any check found a duplicate."""
        return any(c.duplicates is not None and len(c.duplicates) for c in self.checks)

    def leaking_train(self, dataset: str, *, cross: bool = True, within: bool = True) -> Tensor:
        """Sorted train indices of ``dataset`` that duplicate a val / test sample of another
        dataset (when ``cross``) or of its own (when ``within``)."""
        parts = [
            c.duplicates.a_indices
            for c in self.checks
            if c.train == dataset and c.duplicates is not None and (within if c.within else cross)
        ]
        return torch.cat(parts).unique() if parts else torch.zeros(0, dtype=torch.long)

    def clean(self, problems: Mapping[str, Problem], *, within: bool = True) -> dict[str, Problem]:
        """``problems`` with their leaking train samples removed (see :meth:`leaking_train`).

        Only train splits change; validation and test splits are kept whole, so evaluation stays
        comparable with other work. ``meta["leakage_dropped"]`` holds the number removed.

        Raises:
            DataError: a train split would be left empty.
        """
        out = {}
        for name, problem in problems.items():
            drop = self.leaking_train(name, within=within)
            if drop.numel() == 0:
                out[name] = problem
                continue
            keep = torch.ones(len(problem.train), dtype=torch.bool)
            keep[drop] = False
            if not bool(keep.any()):
                raise DataError(
                    f"every train sample of '{name}' duplicates a validation or test sample; "
                    "nothing would be left to train on."
                )
            train = problem.train.subset(keep.nonzero().squeeze(1).to(problem.train.x.device))
            meta = {**problem.meta, "leakage_dropped": int(drop.numel())}
            out[name] = replace(problem, train=train, meta=meta)
        return out

    def to_dict(self) -> dict:
        """A JSON-ready dict: settings, per-dataset leaking train counts and every check."""
        names = list(dict.fromkeys(c.train for c in self.checks))
        return {
            "threshold": self.threshold,
            "decimals": self.decimals,
            "leaking_train": {
                n: {
                    "cross": int(self.leaking_train(n, within=False).numel()),
                    "within": int(self.leaking_train(n, cross=False).numel()),
                    "all": int(self.leaking_train(n).numel()),
                }
                for n in names
            },
            "cross": [c.to_dict() for c in self.cross],
            "within": [c.to_dict() for c in self.within],
        }

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as JSON text (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """A short text a person reads: one line per check and the train samples that leak."""
        near = (
            "exact duplicates only"
            if self.threshold is None
            else f"near-duplicate: cosine of standardised inputs >= {self.threshold}"
        )
        lines = [f"Leakage report ({near}; exact: equal to {self.decimals} decimals)"]
        for title, checks in (
            ("Across datasets (train of one vs val/test of another):", self.cross),
            ("Within datasets (train vs its own val/test):", self.within),
        ):
            lines.append(title)
            if not checks:
                lines.append("  (none checked)")
            for c in checks:
                what = f"  {c.train}.train vs {c.other}.{c.split}: "
                d = c.duplicates
                if d is None:
                    lines.append(what + f"skipped ({c.skipped})")
                elif len(d) == 0:
                    lines.append(what + "clean")
                else:
                    lines.append(
                        what + f"{d.n_exact} exact, {d.n_near} near pair(s); "
                        f"{d.a_indices.numel()} train sample(s) leak"
                    )
        names = list(dict.fromkeys(c.train for c in self.checks))
        for label, kw in (("other datasets'", {"within": False}), ("their own", {"cross": False})):
            counts = ", ".join(f"{n} {self.leaking_train(n, **kw).numel()}" for n in names)
            lines.append(f"Train samples duplicating {label} val/test: {counts}")
        if self.cleaned is not None:
            lines.append("They were removed (drop=True); validation and test splits are unchanged.")
        elif self.has_leaks:
            lines.append("Pass drop=True (or call report.clean(problems)) to remove them.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def leakage_report(
    problems: Mapping[str, Problem],
    threshold: float | None = DEFAULT_THRESHOLD,
    *,
    decimals: int = DEFAULT_DECIMALS,
    within: bool = True,
    drop: bool = False,
) -> LeakageReport:
    """Check datasets to be merged for train samples that leak into evaluation splits.

    For every ordered pair of datasets ``(A, B)``, ``A``'s train split is compared with ``B``'s
    validation and test splits (:func:`find_duplicates`); with ``within``, each dataset's train
    split is also compared with its own validation and test splits, reported separately.
    Train-vs-train overlaps are not leaks and are not checked. Pairs whose input shapes differ
    are skipped (and say so). Each split is hashed and standardised once.

    Args:
        problems: ``{dataset name: problem}``.
        threshold, decimals: as for :func:`find_duplicates` (defaults 0.99 and 4).
        within: also check each dataset against itself. Default True.
        drop: also remove the leaking train samples (across datasets, and within them when
            ``within``); the result is in ``report.cleaned``, the same as
            ``report.clean(problems)``. Validation and test splits are never changed, and the
            indices in the report refer to the train splits as given. Default False.

    Returns:
        a :class:`LeakageReport` (``.summary()`` to read, ``.to_dict()`` for JSON).
    """
    _check_threshold(threshold)
    if not problems:
        raise DataError("leakage_report needs at least one problem.")
    near = threshold is not None
    chunk = 2**23
    prepared: dict[tuple[str, str], _Prepared] = {}

    def prep(name: str, split: str) -> _Prepared:
        if (name, split) not in prepared:
            prepared[name, split] = _prepare(getattr(problems[name], split).x, decimals, near)
        return prepared[name, split]

    checks = []
    for a in problems:
        for b in problems:
            if a == b and not within:
                continue
            for split in ("val", "test"):
                shape_a = tuple(problems[a].train.x.shape[1:])
                shape_b = tuple(getattr(problems[b], split).x.shape[1:])
                if shape_a != shape_b:
                    reason = f"input shapes differ: {shape_a} vs {shape_b}"
                    checks.append(LeakCheck(a, b, split, None, reason))
                    continue
                dup = _compare(prep(a, "train"), prep(b, split), threshold, chunk)
                checks.append(LeakCheck(a, b, split, dup))
    checks.sort(key=lambda c: c.within)
    report = LeakageReport(threshold, decimals, checks)
    if drop:
        report.cleaned = report.clean(problems, within=within)
    return report
