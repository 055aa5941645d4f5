"""Problems from Python objects: arrays and tensors, pandas DataFrames, ``torch`` Datasets.

Each returns a validated :class:`~tlroutes.problem.Problem`, split automatically (seeded,
stratified for classification) unless ``split_of`` gives each sample's split, with the same
label rules as files (:mod:`~tlroutes.data.sources.labels`)::

    from tlroutes.data import from_arrays, from_dataframe, from_dataset

    problem = from_arrays(x, y, labels=["cat", "dog"])           # numpy arrays or tensors
    problem = from_dataframe(df, label="species")                 # numeric feature columns
    problem = from_dataset(torchvision_dataset, labels=ds.classes)  # read lazily
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tlroutes.data.sources.build import SourceOptions, build_problem
from tlroutes.data.sources.labels import to_numpy
from tlroutes.data.sources.tables import Columns, frame_problem
from tlroutes.errors import ConfigError, DataError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.problem import Problem

__all__ = ["from_arrays", "from_dataframe", "from_dataset"]


def _options(task: str | None, labels: Sequence[str] | None, modality: str | None,
             split: Sequence[float], seed: int, classes: Sequence[str | int] | None,
             n: int | None, domain: str | None) -> SourceOptions:
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    if n is not None and (not isinstance(n, int | np.integer) or n < 3):
        raise ConfigError(f"n must be an integer of at least 3, got {n!r}.")
    return SourceOptions(task=task, labels=None if labels is None else list(labels),
                         classes=classes, n=n, split=tuple(split), seed=int(seed),
                         modality=modality, domain=domain, meta={"source": "python"})


def from_arrays(
    x: Any,
    y: Any | None = None,
    *,
    labels: Sequence[str] | None = None,
    task: str | None = None,
    modality: str | None = None,
    name: str = "data",
    split: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    classes: Sequence[str | int] | None = None,
    n: int | None = None,
    split_of: Sequence[str] | None = None,
    domain: str | None = None,
) -> Problem:
    """A problem from inputs ``x`` ``(N, *shape)`` and targets ``y`` (numpy arrays or tensors).

    Args:
        x: the inputs, numbers; held in memory as float32 (long for ``modality="text"``).
        y: class labels (integers, strings, booleans) or, with ``task="regression"``, real
            targets ``(N,)`` or ``(N, K)``; None for an unlabelled problem (then ``labels`` names
            the classes it is predicted over).
        labels: class names in id order (integer labels are ids into it, strings are matched
            by name). Default: the sorted distinct labels.
        task: ``"classification"``, ``"multilabel"`` or ``"regression"``. Default: read from
            ``y`` (float targets must say ``"regression"``).
        modality: ``"image"``, ``"signal"``, ``"tabular"`` or ``"text"``. Default: from the
            sample shape (3-D image, 2-D signal, 1-D tabular).
        name: the problem's name (and the domain's, unless ``domain``). Default ``"data"``.
        split: train / validation / test fractions. Default ``(0.6, 0.2, 0.2)``.
        seed: seed of subsampling and splitting. Default 0.
        classes: keep only these classes (names or ids). Default: all.
        n: keep this many samples (seeded, stratified). Default: all.
        split_of: each sample's split (``"train"``, ``"val"``, ``"test"``). Default: automatic.
        domain: the domain's name. Default: ``name``.
    """
    array = to_numpy(x)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{name}: x holds {array.dtype} values; inputs must be numbers.")
    # a read-only array (a pandas view) would be shared, not copied, by torch.as_tensor
    tensor = torch.as_tensor(array if array.flags.writeable else array.copy())
    tensor = tensor.long() if modality == "text" else tensor.float()
    options = _options(task, labels, modality, split, seed, classes, n, domain)
    return build_problem(name, tensor, y, options, where=name, key=name,
                         source={"python": "arrays"}, split_of=split_of)


def from_dataframe(
    df: Any,
    *,
    label: str | None = None,
    features: Sequence[str] | None = None,
    split_column: str | None = None,
    domain_column: str | None = None,
    domain_value: str | int | None = None,
    labels: Sequence[str] | None = None,
    task: str | None = None,
    name: str = "data",
    split: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    classes: Sequence[str | int] | None = None,
    n: int | None = None,
    domain: str | None = None,
) -> Problem:
    """A problem from a pandas DataFrame, one row per sample, columns chosen as a run file's
    table fields choose them (:mod:`~tlroutes.data.sources.tables`): ``label`` (default the
    column ``label``), ``features`` (default every other column, numeric), ``split_column``,
    ``domain_column`` + ``domain_value``. Other arguments as :func:`from_arrays`."""
    cols = Columns(label=label, features=features, split_column=split_column,
                   domain_column=domain_column, domain_value=domain_value)
    options = _options(task, labels, "tabular", split, seed, classes, n, domain)
    return frame_problem(df, cols, options, name=name, where=f"DataFrame '{name}'", key=name,
                         source={"python": "dataframe"})


class DatasetReader:
    """A map-style ``torch`` Dataset as a :class:`~tlroutes.lazy_inputs.SampleReader`: sample
    ``i`` is ``dataset[i][0]`` when items are ``(input, target)`` pairs, else ``dataset[i]``."""

    def __init__(self, dataset: Any, paired: bool) -> None:
        self.dataset = dataset
        self.paired = paired

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, i: int) -> Any:
        item = self.dataset[i]
        return item[0] if self.paired else item


def _as_float(sample: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(sample) if not isinstance(sample, torch.Tensor)
                           else sample).float()


def from_dataset(
    dataset: Any,
    *,
    labels: Sequence[str] | None = None,
    targets: Any | None = None,
    task: str | None = None,
    modality: str | None = None,
    name: str = "data",
    split: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    classes: Sequence[str | int] | None = None,
    n: int | None = None,
    domain: str | None = None,
) -> Problem:
    """A problem from a map-style ``torch.utils.data.Dataset``, read lazily.

    Items are ``(input, target)`` pairs (torchvision's convention) or inputs alone (then give
    ``targets``, or none for an unlabelled problem). Inputs are read on demand through a
    :class:`~tlroutes.lazy_inputs.LazyInputs` (each must already be a tensor or array of one
    shape; apply your transforms in the Dataset); the targets are read once, from ``targets``,
    the Dataset's own ``targets`` attribute, or by reading every item.

    Args:
        dataset: anything with ``len()`` and ``[i]``.
        labels: class names in id order; default the Dataset's ``classes`` attribute when it
            has one, else the sorted distinct targets.
        targets: every sample's target, when the items do not carry it.
        task, modality, name, split, seed, classes, n, domain: as :func:`from_arrays`.
    """
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise ConfigError(f"from_dataset needs a map-style Dataset (len() and [i]); got "
                          f"{type(dataset).__name__}.")
    if len(dataset) == 0:
        raise DataError(f"{name}: the Dataset is empty.")
    first = dataset[0]
    paired = isinstance(first, tuple | list) and len(first) == 2
    if targets is None and paired:
        own = getattr(dataset, "targets", None)
        targets = own if own is not None and len(own) == len(dataset) else [
            dataset[i][1] for i in range(len(dataset))]
    if targets is not None:
        targets = [t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t
                   for t in (targets.tolist() if hasattr(targets, "tolist") else targets)]
        targets = to_numpy(targets)
    if labels is None and getattr(dataset, "classes", None) is not None and targets is not None \
            and to_numpy(targets).dtype.kind in "iu":
        labels = [str(c) for c in dataset.classes]
    reader = DatasetReader(dataset, paired)
    sample = _as_float(reader.read(0))
    x = LazyInputs(reader, sample_shape=tuple(sample.shape), transform=_as_float)
    options = _options(task, labels, modality, split, seed, classes, n, domain)
    return build_problem(name, x, targets, options, where=f"Dataset '{name}'", key=name,
                         source={"python": "dataset"})
