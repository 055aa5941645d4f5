"""Domain Adaptation when the label sets differ: one module per variant, and what they share.

The Domain Adaptation route (:mod:`tlroutes.routes.domain_adaptation`) keeps the *closed* case
(one label set on both sides) itself and hands every other case to a variant module here:

- ``partial`` — the target's classes are a subset of the source's, target unlabelled: class
  weights from the target's predictions on MCC (default) or PADA's adversarial adaptation
  (:mod:`.partial`);
- ``open_set`` — the target holds classes the source lacks, target unlabelled: an "unknown"
  output, from source support (default) or OSBP (:mod:`.open_set`);
- ``new_label_set`` — target labels given and the label sets differ: a new head on the
  source-trained stem and trunk (:mod:`.new_label_set`);
- ``source_free`` — only a trained source model, no source data: SHOT (:mod:`.source_free`).

Each variant module has ``run(spec, recipe, trainer, source, target) -> Summary``. This package's
``__init__`` imports none of them (they import the route module, which imports this package), so
:func:`variant_module` imports one on first use.

Labels are compared **by name over the classes present** (samples of that class in any split),
not by the declared lists: a declared class without samples transfers nothing, and two problems
may number the same class differently. :func:`label_relation` says how the two sets relate and
:func:`to_source_labels` renumbers the target's ``y`` in the source's label order.

**An unlabelled target** (``Problem.unlabelled``: no label column, class folders or ``y``) runs
every variant that does not train on target labels — closed, partial, open_set, source_free —
with label-free selection; its classes are the declared ones (``labels:``), and no target metric
is computed from its placeholder targets (:func:`target_metrics`): the summary says so
(:data:`UNLABELLED_TARGET_NOTE`). What would read its labels is refused by name
(:func:`check_unlabelled_target`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from tlroutes.errors import ConfigError, did_you_mean
from tlroutes.problem import Problem, Split

__all__ = ["UNLABELLED_TARGET_NOTE", "VARIANTS", "LabelRelation", "check_unlabelled_target",
           "label_relation", "target_metrics", "to_source_labels", "variant_module",
           "variant_options"]

#: The recipe's ``variant`` values besides ``auto``, in the order the docs list them.
VARIANTS: tuple[str, ...] = ("closed", "partial", "open_set", "new_label_set", "source_free")


@dataclass(frozen=True)
class LabelRelation:
    """How the classes present in a source and a target relate (names, in declared order).

    Attributes:
        source: names of the source's classes with at least one sample (any split).
        target: the same for the target.
        shared: target classes the source also has.
        target_only: target classes the source lacks ("unknown" to a source-trained model).
        source_only: source classes absent from the target (outlier classes in partial DA).
    """

    source: tuple[str, ...]
    target: tuple[str, ...]
    shared: tuple[str, ...]
    target_only: tuple[str, ...]
    source_only: tuple[str, ...]

    @property
    def kind(self) -> str:
        """``identical``, ``subset`` (target ⊂ source), ``superset`` (target ⊃ source),
        ``overlapping`` (each has classes the other lacks) or ``disjoint``."""
        if not self.shared:
            return "disjoint"
        if not self.target_only and not self.source_only:
            return "identical"
        if not self.target_only:
            return "subset"
        if not self.source_only:
            return "superset"
        return "overlapping"

    def describe(self) -> str:
        """One line for messages and the report, e.g. ``target ⊂ source (2 of 5 classes)``."""
        n_s, n_t = len(self.source), len(self.target)
        return {
            "identical": f"the same {n_s} classes on both sides",
            "subset": f"target ⊂ source ({n_t} of the source's {n_s} classes; absent from "
                      f"the target: {_names(self.source_only)})",
            "superset": f"target ⊃ source (the target adds {_names(self.target_only)})",
            "overlapping": f"overlapping ({len(self.shared)} shared; the target adds "
                           f"{_names(self.target_only)}, lacks {_names(self.source_only)})",
            "disjoint": f"no class in common (source {_names(self.source)}, target "
                        f"{_names(self.target)})",
        }[self.kind]


def _names(names: tuple[str, ...], limit: int = 6) -> str:
    # Messages stay one line however many classes there are.
    shown = ", ".join(names[:limit])
    return shown + (f" … ({len(names)} in all)" if len(names) > limit else "")


def present(problem: Problem) -> tuple[str, ...]:
    """Names of ``problem``'s classes with at least one sample in train, val or test; for an
    unlabelled problem its declared classes (the closed-set assumption)."""
    if problem.unlabelled:
        return problem.present_labels()
    ys = [s.y for s in (problem.train, problem.val, problem.test) if len(s)]
    if not ys:
        return ()
    seen = torch.unique(torch.cat([y.reshape(-1).long().cpu() for y in ys])).tolist()
    return tuple(problem.task.labels[i] for i in sorted(seen))


def label_relation(source: Problem, target: Problem) -> LabelRelation:
    """The relation of the classes present in ``source`` and ``target`` (classification)."""
    s, t = present(source), present(target)
    return LabelRelation(
        source=s, target=t,
        shared=tuple(n for n in t if n in s),
        target_only=tuple(n for n in t if n not in s),
        source_only=tuple(n for n in s if n not in t),
    )


def to_source_labels(target: Problem, source: Problem, unknown: int | None = None) -> Problem:
    """``target`` with every ``y`` renumbered in the source's label order, and the source's task.

    Args:
        target, source: classification problems.
        unknown: the index that target classes the source lacks get (open-set: ``K``, the
            "unknown" output). Default None: such a class is an error.

    Raises:
        ConfigError: a target class the source lacks while ``unknown`` is None.
    """
    index = {name: i for i, name in enumerate(source.task.labels)}
    # Only classes with samples matter: a declared class without any renumbers nothing.
    missing = [n for n in present(target) if n not in index]
    if missing and unknown is None:
        raise ConfigError(
            f"The target's classes {_names(tuple(missing))} are not among the source's "
            f"{_names(source.task.labels)}; this variant needs every target class in the source."
        )
    lookup = torch.tensor([index.get(n, 0 if unknown is None else unknown)
                           for n in target.task.labels], dtype=torch.long)

    def renumber(split: Split) -> Split:
        if target.unlabelled:
            return split  # placeholders stay placeholders
        y = lookup.to(split.y.device)[split.y.long()]
        return Split(split.x, y)

    return Problem(target.name, source.task, target.domain, renumber(target.train),
                   renumber(target.val), renumber(target.test), meta=target.meta)


UNLABELLED_TARGET_NOTE = ("no target metrics: the target holds no labels (adapted without "
                          "them, checkpoints selected label-free); give a labelled target to "
                          "score the adaptation")
"""The summary's ``metric_note`` of a run whose target is unlabelled."""


def target_metrics(target: Problem, measure: Callable[[], dict[str, float]]
                   ) -> dict[str, float]:
    """``measure()`` — the target's test metrics — or ``{}`` when the target is unlabelled:
    its targets are placeholders, never scored."""
    return {} if target.unlabelled else measure()


def check_unlabelled_target(target: Problem, recipe: Any, variant: str) -> None:
    """Refuse, naming the setting and why, what reads the labels of an unlabelled target.

    Raises:
        DataError: ``recipe.target_labels`` > 0, ``selection: target_accuracy``, or a variant
            that trains on target labels (``new_label_set``).
    """
    if not target.unlabelled:
        return
    from tlroutes.data.sources.build import require_labels

    why = None
    if variant == "new_label_set":
        why = "Domain Adaptation's variant new_label_set (it trains a new head on target labels)"
    elif recipe.target_labels > 0:
        why = (f"Domain Adaptation with recipe.target_labels {recipe.target_labels} (supervised "
               "adaptation on that share of the target's labels; set it to 0)")
    elif recipe.selection == "target_accuracy":
        why = ("Domain Adaptation's selection target_accuracy (it selects on target validation "
               "labels; use im, snd, source_accuracy or last)")
    if why is not None:
        require_labels(target, "target", why)


def variant_module(name: str) -> ModuleType:
    """The module of variant ``name`` (imported on first use).

    Raises:
        ConfigError: no module for ``name`` (e.g. a variant not yet available).
    """
    if name not in VARIANTS or name == "closed":
        raise ConfigError(f"Unknown Domain Adaptation variant '{name}'; "
                          f"valid: {', '.join(VARIANTS)}.")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise  # a missing dependency of the module, not the module itself
        raise ConfigError(
            f"The Domain Adaptation variant '{name}' is not available in this version of "
            "tlroutes."
        ) from None


def variant_options(variant: str, given: dict[str, Any],
                    defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with the recipe's ``variant_args``; unknown names are errors.

    A given value must have its default's type (an int is accepted for a float).

    Raises:
        ConfigError: an option the variant does not take (with a suggestion), or a wrong type.
    """
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            takes = ", ".join(defaults) or "none"
            raise ConfigError(
                f"variant '{variant}' has no option '{key}'.{did_you_mean(key, list(defaults))} "
                f"Its options: {takes}."
            )
        want = type(defaults[key])
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"variant '{variant}': option '{key}' must be a {want.__name__}, "
                              f"got {value!r}.")
        out[key] = value
    return out
