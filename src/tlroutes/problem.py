"""What is learned, from what data: Task, Domain, Split and Problem.

A problem is data + a task + a domain. The task lives at the model's output side (which head), the
domain at its input side (which stem). Conventions for tensors in a :class:`Split`:

- ``x``: float tensor of shape ``(N, *domain.input_shape)``; images are ``(C, H, W)``, signals
  ``(C, L)``, tabular ``(D,)``, text token ids ``(T,)`` (long). Data too large to hold is a
  :class:`~tlroutes.lazy_inputs.LazyInputs` instead, which reads the samples it is indexed by.
- ``y``: classification: long ``(N,)`` with values in ``[0, len(task.labels))``; multilabel: float
  ``(N, K)`` of 0/1; regression: float ``(N, K)`` with ``K = task.num_outputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from tlroutes.errors import DataError
from tlroutes.lazy_inputs import LazyInputs

TaskKind = Literal["classification", "multilabel", "regression"]
Modality = Literal["image", "signal", "tabular", "text"]
TASK_KINDS: tuple[str, ...] = ("classification", "multilabel", "regression")
MODALITIES: tuple[str, ...] = ("image", "signal", "tabular", "text")


@dataclass(frozen=True)
class Task:
    """What is predicted.

    Args:
        kind: ``"classification"`` (one label per sample), ``"multilabel"`` (a 0/1 vector) or
            ``"regression"`` (a real vector).
        labels: class names (classification, multilabel) or target names (regression). Default
            ``()``, which for regression means one unnamed target.
        name: a short name used in reports and as the head's key. Default ``"task"``.
    """

    kind: TaskKind
    labels: tuple[str, ...] = ()
    name: str = "task"

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise DataError(
                f"Task kind '{self.kind}' is unknown; use one of {', '.join(TASK_KINDS)}."
            )
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        if self.kind in ("classification", "multilabel") and len(self.labels) < 2:
            raise DataError(
                f"Task '{self.name}' is {self.kind} but declares {len(self.labels)} label(s); "
                "give at least two label names in `labels`."
            )

    @property
    def num_outputs(self) -> int:
        """Width of the head's output: number of classes, labels or regression targets."""
        return max(len(self.labels), 1)

    def same_kind(self, other: Task) -> bool:
        """True when both tasks are of the same kind (the cube's Task axis says 'same')."""
        return self.kind == other.kind


@dataclass(frozen=True)
class Domain:
    """Where the inputs come from.

    Args:
        name: a short name, e.g. ``"digits"`` or ``"digits-rotated-30"``.
        modality: ``"image"``, ``"signal"``, ``"tabular"`` or ``"text"``.
        input_shape: the shape of one sample, e.g. ``(1, 8, 8)`` for an 8×8 grey image or
            ``(1, 40)`` for a one-channel signal of length 40.
        normalization: the per-channel ``(mean, std)`` the inputs were normalised with by their
            transform (values scaled to [0, 1] first), so a stem that normalises itself (the
            ``imagenet`` stem) can undo it; None (default): the inputs are as the data holds
            them. Not part of the domain's identity.
    """

    name: str
    modality: Modality
    input_shape: tuple[int, ...]
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = field(
        default=None, compare=False)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise DataError(
                f"Domain '{self.name}': modality '{self.modality}' is unknown; "
                f"use one of {', '.join(MODALITIES)}."
            )
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))


@dataclass
class Split:
    """One split of a problem: inputs ``x`` and targets ``y`` (see module doc).

    Targets are always held in memory; inputs are a tensor or, read on demand, a
    :class:`~tlroutes.lazy_inputs.LazyInputs`.
    """

    x: Tensor | LazyInputs
    y: Tensor
    # (the y tensor counted, width, counts): counting is O(N) but asked for by inspect, plan and
    # the report for the same split; keyed on the tensor's identity so that a reassigned y is
    # counted afresh
    _counts: tuple[Tensor, int, tuple[int, ...]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def class_counts(self, num_classes: int | None = None) -> tuple[int, ...]:
        """Samples per class: ``counts[k]`` = number of samples labelled ``k``.

        For classification targets (long ``(N,)``) the count of each class index; for
        multilabel targets (0/1 ``(N, K)``) the positives per label; ``()`` for regression
        (float targets that are not 0/1 columns). ``num_classes`` sets the width (default: the
        largest index present + 1, or ``K``); classes with no sample count 0. Cached per ``y``.
        """
        y = self.y
        if y.dim() == 1 and not y.is_floating_point():
            width = num_classes if num_classes is not None else (int(y.max()) + 1 if len(y) else 0)
        elif y.dim() == 2 and y.numel() and bool(((y == 0) | (y == 1)).all()):
            width = int(y.shape[1])
        else:
            return ()
        cached = self._counts
        if cached is not None and cached[0] is y and cached[1] == width:
            return cached[2]
        if y.dim() == 1:
            counts = torch.bincount(y.detach().cpu().long().clamp_min(0), minlength=width)[:width]
        else:
            counts = y.detach().cpu().sum(0).long()
        out = tuple(int(c) for c in counts)
        self._counts = (y, width, out)
        return out

    @property
    def is_lazy(self) -> bool:
        """True when the inputs are read on demand (:class:`~tlroutes.lazy_inputs.LazyInputs`)."""
        return isinstance(self.x, LazyInputs)

    def subset(self, index: Tensor) -> Split:
        """The samples at ``index`` (a long tensor of positions); lazy inputs stay lazy."""
        x = self.x.subset(index) if isinstance(self.x, LazyInputs) else self.x[index]
        return Split(x, self.y[index])


@dataclass
class Problem:
    """Data + a task + a domain, with train / validation / test splits.

    Args:
        name: a short name used in reports and stream keys.
        task: what is predicted.
        domain: where the inputs come from.
        train, val, test: the splits. Validation drives early stopping and model selection;
            test is only read for the final report.
        meta: free-form facts about how the data was made (generator, shift, seed).
    """

    name: str
    task: Task
    domain: Domain
    train: Split
    val: Split
    test: Split
    meta: dict = field(default_factory=dict)

    def splits(self) -> dict[str, Split]:
        """The three splits by name."""
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def class_counts(self) -> dict[str, dict[str, int]]:
        """Samples per class in each split: ``{"train": {label: count, ...}, "val": ..., ...}``.

        Every declared label appears, with 0 when the split holds none of it (that is what
        tells a label *present* from a label only *declared*). Multilabel counts positives per
        label. Empty for regression and for an unlabelled problem (``meta["unlabelled"]``,
        whose targets are all -1). Counted once per split (see :meth:`Split.class_counts`).
        """
        if self.task.kind == "regression" or self.unlabelled:
            return {}
        width = len(self.task.labels)
        return {name: dict(zip(self.task.labels, split.class_counts(width), strict=False))
                for name, split in self.splits().items()}

    def present_labels(self, splits: tuple[str, ...] = ("train", "val", "test")) -> tuple[str, ...]:
        """The labels with at least one sample in ``splits`` (default all three), in the
        declared order; ``()`` for regression. A declared label outside it has no sample.

        An unlabelled problem cannot tell: its declared labels are taken as present (the
        closed-set assumption, which Domain Adaptation makes of an unlabelled target)."""
        if self.unlabelled:
            return self.task.labels if self.task.kind != "regression" else ()
        counts = self.class_counts
        return tuple(label for label in self.task.labels
                     if any(counts[s].get(label, 0) > 0 for s in splits if s in counts))

    @property
    def unlabelled(self) -> bool:
        """True for a problem without labels (``meta["unlabelled"]``): its targets are -1
        (classification) or NaN, placeholders no loss or metric may read."""
        return bool(self.meta.get("unlabelled", False))

    def validate(self) -> Problem:
        """Check every split against the declared task and domain; raise :class:`DataError`.

        Checks: no split is empty; ``x`` has shape ``(N, *domain.input_shape)``; ``x`` and ``y``
        have the same length; inputs are finite; labels lie in the declared label set (not for
        an unlabelled problem, whose targets are placeholders). Returns ``self`` so that it can
        be chained.
        """
        for split_name, split in self.splits().items():
            where = f"problem '{self.name}', {split_name} split"
            if len(split) == 0:
                raise DataError(f"{where} is empty; every split needs at least one sample.")
            if tuple(split.x.shape[1:]) != self.domain.input_shape:
                raise DataError(
                    f"{where}: inputs have per-sample shape {tuple(split.x.shape[1:])} but domain "
                    f"'{self.domain.name}' declares input_shape {self.domain.input_shape}. Reshape "
                    "the data or fix the declared shape."
                )
            if split.y.shape[0] != split.x.shape[0]:
                raise DataError(
                    f"{where}: {split.x.shape[0]} inputs but {split.y.shape[0]} targets."
                )
            # lazy inputs are checked by their source as they are read
            if (not split.is_lazy and split.x.is_floating_point()
                    and not bool(torch.isfinite(split.x).all())):
                bad = int((~torch.isfinite(split.x)).flatten(1).any(1).sum())
                raise DataError(
                    f"{where}: {bad} sample(s) contain NaN or Inf inputs; clean or drop them."
                )
            if not self.unlabelled:
                check_targets(self.task, split.y, where)
        return self


def check_targets(task: Task, y: Tensor, where: str) -> None:
    """Raise :class:`DataError` when targets ``y`` do not fit ``task`` (see module doc)."""
    if task.kind == "classification":
        if y.dim() != 1 or y.is_floating_point():
            raise DataError(
                f"{where}: classification targets must be integer class indices of shape (N,), "
                f"got dtype {y.dtype} and shape {tuple(y.shape)}."
            )
        bad = (y < 0) | (y >= task.num_outputs)
        if bool(bad.any()):
            values = sorted({int(v) for v in y[bad].unique()[:5]})
            raise DataError(
                f"{where}: label value(s) {values} are outside the declared label set "
                f"0..{task.num_outputs - 1} ({', '.join(task.labels)}). Declare every label in "
                "`labels` or drop those samples."
            )
        return
    if y.dim() != 2 or y.shape[1] != task.num_outputs:
        raise DataError(
            f"{where}: {task.kind} targets must have shape (N, {task.num_outputs}), "
            f"got {tuple(y.shape)}."
        )
    if not bool(torch.isfinite(y).all()):
        raise DataError(f"{where}: targets contain NaN or Inf.")
    if task.kind == "multilabel" and not bool(((y == 0) | (y == 1)).all()):
        raise DataError(f"{where}: multilabel targets must be 0 or 1.")


def on_device(t: Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> Tensor:
    """``t`` on ``device``; floating tensors also cast to ``dtype`` when it is given.

    ``dtype`` is the floating dtype of the weights that read ``t`` (float64 under "64-true",
    bf16 under "bf16-true"); integer labels keep theirs. Default None: the dtype ``t`` has.
    """
    if dtype is not None and t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    return t.to(device)
