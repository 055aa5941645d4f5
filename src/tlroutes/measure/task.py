"""How two problems' tasks relate: kinds, label sets, and what a source model says about them.

:func:`compare_tasks` reports three kinds of evidence:

1. the task kinds (classification / multilabel / regression) — this alone decides the cube's
   task axis: ``verdict`` is ``"same"`` when the kinds agree, as in
   :func:`tlroutes.routes.common.relation`;
2. the label sets of the classes *present* (at least one sample in some split), by name —
   ``identical``, ``subset`` (source ⊂ target), ``superset``, ``overlap`` or ``disjoint``, with
   the Jaccard index — and apart from it the relation of the *declared* label lists, the
   classes missing on either side, the samples per class and the label-prior shift
   (:func:`label_presence`). A declared label without samples transfers nothing, so the
   present classes decide; the Domain Adaptation route picks its variant from them. Reported
   for reading and for the variant, not used by the task verdict (two digit classifiers over
   disjoint digits are still the same kind of task: a new head is all the route changes);
3. with a source model, how the target labels depend on its predictions on the target inputs:
   NCE (Tran et al. 2019) and the matched and plain agreement.

Example::

    evidence = compare_tasks(source, target, source_model=lambda x: model(x, head="source"))
    print(evidence.verdict, evidence.label_relation, evidence.nce)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from torch import Tensor

from tlroutes.errors import DataError
from tlroutes.measure.transferability import _apply, nce
from tlroutes.problem import Problem, Split

#: Label-set relations, from closest to farthest; "n/a" when label sets are not comparable.
LABEL_RELATIONS: tuple[str, ...] = ("identical", "subset", "superset", "overlap", "disjoint",
                                    "n/a")


@dataclass
class TaskEvidence:
    """What :func:`compare_tasks` found about a source and a target task."""

    source: str
    """The source problem's name."""
    target: str
    """The target problem's name."""
    source_kind: str
    """The source task's kind: ``"classification"``, ``"multilabel"`` or ``"regression"``."""
    target_kind: str
    """The target task's kind."""
    same_kind: bool
    """True when both kinds agree."""
    label_relation: str
    """One of :data:`LABEL_RELATIONS` over the classes *present* (with samples), by name:
    ``"subset"`` means source ⊂ target."""
    jaccard: float | None
    """``|S ∩ T| / |S ∪ T|`` of the present label-name sets; ``None`` when ``"n/a"``."""
    shared_labels: list[str]
    """Present label names in both tasks, in the target's order (empty for ``"n/a"``)."""
    label_reason: str
    """A sentence explaining ``label_relation`` (and where declared and present differ)."""
    verdict: str
    """The cube's task axis: ``"same"`` when the kinds agree, else ``"different"``."""
    reason: str
    """A sentence explaining ``verdict``."""
    n_samples: int | None = None
    """Target training samples the source model was run on; ``None`` without a source model."""
    nce: float | None = None
    """``-H(Y|Z)`` in nats (≤ 0; 0 = the target label is a function of the source prediction),
    Y the target label, Z the source model's arg-max; ``None`` when not measured."""
    matched_agreement: float | None = None
    """Fraction of target samples whose label equals the target label most often seen with the
    source model's prediction (the best many-to-one map from source to target classes, in
    ``[0, 1]``); ``None`` when not measured."""
    plain_agreement: float | None = None
    """Among target samples whose label name is also a source label name, the fraction whose
    source prediction has that same name; ``None`` when no name is shared or not measured."""
    labels: LabelPresence | None = None
    """Classes present on each side, their counts, the declared relation and the prior shift;
    ``None`` when the label sets are not comparable (``"n/a"``)."""
    notes: list[str] = field(default_factory=list)
    """Why a measurement was skipped, and other remarks."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class LabelPresence:
    """How the classes *present* in a source and a target relate (see :func:`label_presence`).

    Names follow each problem's declared label list; a class is present when some sample of
    the counted splits carries it (for multilabel: some sample has it positive).
    """

    relation: str
    """Relation of the present sets: ``identical``, ``subset`` (source ⊂ target),
    ``superset`` (source ⊃ target), ``overlap`` or ``disjoint``."""
    jaccard: float
    """``|S ∩ T| / |S ∪ T|`` of the present sets (1.0 when both are empty)."""
    source: tuple[str, ...]
    """Source classes present, in the source's declared order."""
    target: tuple[str, ...]
    """Target classes present, in the target's declared order."""
    shared: tuple[str, ...]
    """Target classes present on both sides, in the target's order."""
    target_only: tuple[str, ...]
    """Target classes with no source sample: a source-trained model has never seen them
    (open-set classes for Domain Adaptation)."""
    source_only: tuple[str, ...]
    """Source classes with no target sample (outlier classes for partial Domain Adaptation)."""
    declared_relation: str
    """The same relation over the declared label lists (``labels``), whatever is present."""
    declared_jaccard: float
    """Jaccard index of the declared lists."""
    declared_without_samples: dict[str, tuple[str, ...]]
    """Per side (``"source"``, ``"target"``): declared labels with no sample."""
    source_counts: dict[str, int]
    """Source samples per declared label, over the counted splits."""
    target_counts: dict[str, int]
    """Target samples per declared label, over the counted splits."""
    prior_shift: float | None
    """Label-prior shift over the shared classes: total variation distance
    ``0.5 * sum |p_s(c) - p_t(c)|`` of the class proportions renormalised over ``shared``, in
    [0, 1] (0 = the same proportions); ``None`` with fewer than two shared classes."""
    splits: tuple[str, ...] = ("train", "val", "test")
    """The splits counted."""
    unlabelled: tuple[str, ...] = ()
    """The sides (``"source"``, ``"target"``) without labels: their declared classes are taken
    as present (the
    closed-set assumption), their counts left empty and no prior shift measured."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def describe(self) -> str:
        """One line: the present relation with Jaccard, what is missing where, the prior shift."""
        parts = [f"{self.relation} (Jaccard {self.jaccard:.2f}) over the classes present"]
        if self.target_only:
            parts.append(f"target classes with no source sample: {_names(self.target_only)}")
        if self.source_only:
            parts.append(f"source classes with no target sample: {_names(self.source_only)}")
        if self.prior_shift is not None:
            parts.append(f"label-prior shift (total variation) {self.prior_shift:.2f}")
        if (self.declared_relation, self.declared_jaccard) != (self.relation, self.jaccard):
            parts.append(f"declared lists: {self.declared_relation} (Jaccard "
                         f"{self.declared_jaccard:.2f})")
        return "; ".join(parts)


def label_relation(source: tuple[str, ...], target: tuple[str, ...]) -> tuple[str, float]:
    """The relation of two label-name sets and their Jaccard index.

    Returns ``("identical" | "subset" | "superset" | "overlap" | "disjoint", jaccard)``;
    ``"subset"`` means every source label is a target label and the target has more.
    """
    s, t = set(source), set(target)
    union = s | t
    jaccard = len(s & t) / len(union) if union else 1.0
    if s == t:
        return "identical", jaccard
    if s < t:
        return "subset", jaccard
    if s > t:
        return "superset", jaccard
    return ("overlap" if s & t else "disjoint"), jaccard


def label_presence(
    source: Problem, target: Problem, *, splits: tuple[str, ...] = ("train", "val", "test")
) -> LabelPresence:
    """The relation of the classes present in ``source`` and ``target`` (classification or
    multilabel), with counts, the declared relation apart and the label-prior shift.

    This is what the Domain Adaptation route reads to pick its variant (e.g. target ⊂ source:
    partial; target classes the source lacks: open-set). Mind the direction: ``relation`` is
    source-first (``"subset"`` = source ⊂ target, so partial DA is ``"superset"``); the
    ``target_only`` and ``source_only`` fields say it without a direction.

    Args:
        source, target: the problems; only the tasks and the targets ``y`` are read.
        splits: the splits whose samples count. Default all three.

    Raises:
        DataError: a regression task (targets are values, not classes).
    """
    for problem in (source, target):
        if problem.task.kind == "regression":
            raise DataError(f"'{problem.name}' is a regression task: it has no classes to "
                            "compare.")
    presence = label_presence_from_counts(
        _summed(source, splits), _summed(target, splits), splits=splits)
    if not (source.unlabelled or target.unlabelled):
        return presence
    # An unlabelled side's declared classes count as present (the closed-set assumption Domain
    # Adaptation makes of an unlabelled target); its counts and the prior shift are unknown.
    return replace(
        presence, prior_shift=None,
        source_counts={} if source.unlabelled else presence.source_counts,
        target_counts={} if target.unlabelled else presence.target_counts,
        declared_without_samples={
            side: () if problem.unlabelled else presence.declared_without_samples[side]
            for side, problem in (("source", source), ("target", target))},
        unlabelled=tuple(side for side, p in (("source", source), ("target", target))
                         if p.unlabelled))


def label_presence_from_y(
    source_y: Tensor, target_y: Tensor, source_labels: tuple[str, ...] | None = None,
    target_labels: tuple[str, ...] | None = None,
) -> LabelPresence:
    """:func:`label_presence` from raw targets: class indices ``(N,)`` or multilabel 0/1
    ``(N, K)``; ``*_labels`` name the indices (default: the index as text, ``"0"``, ``"1"``,
    …, up to the largest present, so that two sides numbered alike compare by index)."""
    counts = []
    for y, labels in ((source_y, source_labels), (target_y, target_labels)):
        width = None if labels is None else len(labels)
        per = Split(y, y).class_counts(width)
        names = labels if labels is not None else tuple(str(i) for i in range(len(per)))
        counts.append(dict(zip(names, per, strict=False)))
    return label_presence_from_counts(counts[0], counts[1], splits=("given",))


def label_presence_from_counts(
    source_counts: dict[str, int], target_counts: dict[str, int], *,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> LabelPresence:
    """:func:`label_presence` from samples per declared label on each side (dict order is
    the declared order)."""
    s_present = tuple(n for n, c in source_counts.items() if c > 0)
    t_present = tuple(n for n, c in target_counts.items() if c > 0)
    relation, jaccard = label_relation(s_present, t_present)
    declared, declared_jaccard = label_relation(tuple(source_counts), tuple(target_counts))
    shared = tuple(n for n in t_present if n in set(s_present))
    prior = None
    if len(shared) >= 2:
        ps = np.array([source_counts[n] for n in shared], dtype=float)
        pt = np.array([target_counts[n] for n in shared], dtype=float)
        prior = float(0.5 * np.abs(ps / ps.sum() - pt / pt.sum()).sum())
    return LabelPresence(
        relation=relation, jaccard=jaccard, source=s_present, target=t_present, shared=shared,
        target_only=tuple(n for n in t_present if n not in set(s_present)),
        source_only=tuple(n for n in s_present if n not in set(t_present)),
        declared_relation=declared, declared_jaccard=declared_jaccard,
        declared_without_samples={
            "source": tuple(n for n, c in source_counts.items() if c == 0),
            "target": tuple(n for n, c in target_counts.items() if c == 0)},
        source_counts=dict(source_counts), target_counts=dict(target_counts),
        prior_shift=prior, splits=tuple(splits),
    )


def _summed(problem: Problem, splits: tuple[str, ...]) -> dict[str, int]:
    """Samples per declared label over ``splits`` (1 each for an unlabelled problem: present,
    count unknown; :func:`label_presence` drops them)."""
    if problem.unlabelled:
        return dict.fromkeys(problem.task.labels, 1)
    counts = problem.class_counts
    return {label: sum(counts[s][label] for s in splits if s in counts)
            for label in problem.task.labels}


def _names(names: tuple[str, ...], limit: int = 6) -> str:
    # One line however many classes there are.
    shown = ", ".join(names[:limit])
    return shown + (f" … ({len(names)} in all)" if len(names) > limit else "")


def compare_tasks(
    source: Problem,
    target: Problem,
    *,
    source_model: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 256,
) -> TaskEvidence:
    """Compare the tasks of ``source`` and ``target``.

    Args:
        source: the source problem (only its task is read).
        target: the target problem; its ``train`` split feeds the source model.
        source_model: optional; maps a batch of target inputs ``(B, *input_shape)`` to the
            source task's logits ``(B, len(source.task.labels))``. Measured when the target is
            classification and the source is classification or multilabel (for multilabel the
            most confident label serves as the prediction): NCE, matched agreement and, when
            label names are shared, plain agreement. An ``nn.Module`` (or a bound method of one)
            runs in eval mode without gradients, its modes restored. Default ``None``.
        batch_size: samples per forward pass of ``source_model``. Default 256.

    Returns:
        A :class:`TaskEvidence`. The verdict reads only the kinds; label sets and the source
        model's measurements are reported alongside.
    """
    s_task, t_task = source.task, target.task
    same_kind = s_task.kind == t_task.kind
    if same_kind:
        reason = (f"Both tasks are {s_task.kind}, so the cube's task axis says 'same' (label "
                  "sets are reported but do not decide the axis).")
    else:
        reason = (f"The source task is {s_task.kind} and the target task is {t_task.kind}; "
                  "different kinds need a different head and loss, so the cube's task axis "
                  "says 'different'.")

    shared: list[str] = []
    jaccard: float | None = None
    relation, label_reason = "", ""
    if "regression" in (s_task.kind, t_task.kind):
        relation = "n/a"
        label_reason = ("Regression targets are real values, not label sets; their names are "
                        "not compared.")
    elif not same_kind:
        relation = "n/a"
        label_reason = (f"A {s_task.kind} label set and a {t_task.kind} label set mean different "
                        "things (one label per sample vs any number); they are not compared.")
    presence = None
    if relation != "n/a":
        presence = label_presence(source, target)
        relation, jaccard = presence.relation, presence.jaccard
        shared = list(presence.shared)
        label_reason = _label_sentence(relation, presence.source, presence.target, shared)
        label_reason += _presence_sentence(presence)

    evidence = TaskEvidence(
        source=source.name, target=target.name, source_kind=s_task.kind,
        target_kind=t_task.kind, same_kind=same_kind, label_relation=relation, jaccard=jaccard,
        shared_labels=shared, label_reason=label_reason,
        verdict="same" if same_kind else "different", reason=reason, labels=presence,
    )
    if source_model is not None:
        _measure_source_model(evidence, source, target, source_model, batch_size)
    return evidence


def _label_sentence(
    relation: str, source: tuple[str, ...], target: tuple[str, ...], shared: list[str]
) -> str:
    count = f"{len(shared)} of the source's {len(set(source))} and the target's {len(set(target))}"
    if relation == "identical":
        order = "" if source == target else " (in a different order)"
        return f"Both tasks have samples of the same {len(set(source))} classes{order}."
    if relation == "subset":
        return (f"Every source class present is a target class; the target adds more ({count} "
                "shared).")
    if relation == "superset":
        return (f"Every target class present is a source class; the source has more ({count} "
                "shared).")
    if relation == "overlap":
        return f"The classes present share {count} names."
    return "The classes present share no name."


def _presence_sentence(presence: LabelPresence) -> str:
    """Where the declared lists say more than the samples: a sentence per difference."""
    out = ""
    if presence.unlabelled:
        out += (f" The {' and the '.join(presence.unlabelled)} hold"
                f"{'s' if len(presence.unlabelled) == 1 else ''} no labels: the declared "
                "classes are taken as present (counts unknown).")
    for side, missing in presence.declared_without_samples.items():
        if missing:
            out += (f" The {side} declares {_names(missing)} but has no sample of "
                    f"{'it' if len(missing) == 1 else 'them'}.")
    if (presence.declared_relation, presence.declared_jaccard) != (presence.relation,
                                                                    presence.jaccard):
        out += (f" By the declared lists alone the sets would read {presence.declared_relation} "
                f"(Jaccard {presence.declared_jaccard:.2f}); the classes present decide.")
    return out


def _measure_source_model(
    evidence: TaskEvidence, source: Problem, target: Problem,
    source_model: Callable[[Tensor], Tensor], batch_size: int,
) -> None:
    """Fill NCE and the agreements, or say in ``notes`` why they were skipped."""
    if target.task.kind != "classification":
        evidence.notes.append(f"NCE and agreement need a classification target; the target is "
                              f"{target.task.kind}.")
        return
    if source.task.kind == "regression":
        evidence.notes.append("NCE and agreement need a source model that predicts classes; "
                              "the source task is regression.")
        return
    if target.unlabelled:
        evidence.notes.append("NCE and agreement compare the source model's predictions with "
                              "target labels; the target holds none.")
        return
    logits = _apply(source_model, target.train.x, batch_size)
    width = source.task.num_outputs
    if logits.shape != (len(target.train), width):
        raise DataError(
            f"source_model returned shape {tuple(logits.shape)} on the target's {len(target.train)}"
            f" training samples; expected ({len(target.train)}, {width}): one logit per source "
            f"label of '{source.name}'."
        )
    if source.task.kind == "multilabel":
        evidence.notes.append("The source is multilabel: its most confident label serves as its "
                              "prediction.")
    z = logits.argmax(1)
    y = target.train.y.cpu().numpy()
    evidence.n_samples = int(y.shape[0])
    evidence.nce = nce(z, y)
    evidence.matched_agreement = _matched_agreement(z, y)
    s_names = [source.task.labels[i] for i in z]
    t_names = [target.task.labels[i] for i in y]
    in_shared = [i for i, name in enumerate(t_names) if name in set(source.task.labels)]
    if in_shared:
        evidence.plain_agreement = float(np.mean([s_names[i] == t_names[i] for i in in_shared]))
    else:
        evidence.notes.append("No target label name is a source label name: no plain agreement.")


def _matched_agreement(z: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of mapping each source prediction to its most frequent target label."""
    hits = 0
    for value in np.unique(z):
        hits += int(np.bincount(y[z == value]).max())
    return hits / y.shape[0]
