"""How two problems' tasks relate: kinds, label sets, and what a source model says about them.

:func:`compare_tasks` reports three kinds of evidence:

1. the task kinds (classification / multilabel / regression) — this alone decides the cube's
   task axis: ``verdict`` is ``"same"`` when the kinds agree, as in
   :func:`tlroutes.routes.common.relation`;
2. the label sets by name — ``identical``, ``subset`` (source ⊂ target), ``superset``,
   ``overlap`` or ``disjoint``, with the Jaccard index — reported for reading, not used by the
   verdict (two digit classifiers over disjoint digits are still the same kind of task: a new
   head is all the route changes);
3. with a source model, how the target labels depend on its predictions on the target inputs:
   NCE (Tran et al. 2019) and the matched and plain agreement.

Example::

    evidence = compare_tasks(source, target, source_model=lambda x: model(x, head="source"))
    print(evidence.verdict, evidence.label_relation, evidence.nce)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from tlroutes.errors import DataError
from tlroutes.measure.transferability import _apply, nce
from tlroutes.problem import Problem

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
    """One of :data:`LABEL_RELATIONS`: by label name, ``"subset"`` means source ⊂ target."""
    jaccard: float | None
    """``|S ∩ T| / |S ∪ T|`` of the label-name sets; ``None`` when the relation is ``"n/a"``."""
    shared_labels: list[str]
    """Label names in both tasks, in the target's order (empty for ``"n/a"``)."""
    label_reason: str
    """A sentence explaining ``label_relation``."""
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
    notes: list[str] = field(default_factory=list)
    """Why a measurement was skipped, and other remarks."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


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
    if "regression" in (s_task.kind, t_task.kind):
        relation = "n/a"
        label_reason = ("Regression targets are real values, not label sets; their names are "
                        "not compared.")
    elif not same_kind:
        relation = "n/a"
        label_reason = (f"A {s_task.kind} label set and a {t_task.kind} label set mean different "
                        "things (one label per sample vs any number); they are not compared.")
    else:
        relation, jaccard = label_relation(s_task.labels, t_task.labels)
        shared = [name for name in t_task.labels if name in set(s_task.labels)]
        label_reason = _label_sentence(relation, s_task.labels, t_task.labels, shared)

    evidence = TaskEvidence(
        source=source.name, target=target.name, source_kind=s_task.kind,
        target_kind=t_task.kind, same_kind=same_kind, label_relation=relation, jaccard=jaccard,
        shared_labels=shared, label_reason=label_reason,
        verdict="same" if same_kind else "different", reason=reason,
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
        return f"Both tasks have the same {len(set(source))} label names{order}."
    if relation == "subset":
        return f"Every source label is a target label; the target adds more ({count} shared)."
    if relation == "superset":
        return f"Every target label is a source label; the source has more ({count} shared)."
    if relation == "overlap":
        return f"The label sets share {count} names."
    return "The label sets share no name."


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
