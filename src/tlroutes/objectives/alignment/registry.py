"""The alignment-loss registry: name → builder, with what each method needs from the task.

Same style as the trunk and stem registries (:class:`tlroutes.backbones.registry.Registry`, in the
manner of timm): a decorator registers a builder under a short name, and one factory builds by
name with the keyword arguments checked first.

**The family's contract.** Every registered builder is called as::

    builder(*, features: int, classes: int, max_steps: int, **options) -> nn.Module

- ``features`` — the trunk's feature width D;
- ``classes`` — the head's output width K (the number of classes for classification);
- ``max_steps`` — steps of the adaptation stage, for losses with a warm-up schedule;
- ``options`` — the method's own keyword arguments (the run file's ``recipe.method_args``).

A builder takes the three context arguments first, by keyword, even those it ignores, so that one
call builds any method. The module it returns is called as::

    loss(f_s, f_t, g_s, g_t) -> Tensor      # a scalar to minimise (times a trade-off)

with ``f_s`` ``(B_s, D)``, ``f_t`` ``(B_t, D)`` the trunk features of a source and a target batch
and ``g_s`` ``(B_s, K)``, ``g_t`` ``(B_t, K)`` the head's logits for them; a method ignores what
it does not read. A loss that reports the discriminator's domain accuracy sets
``last_accuracy`` (a float) after each call.

``register_alignment(name, needs_classification=True)`` declares that the method reads class
predictions (a softmax over ``g``), so a route refuses it for other task kinds with
:meth:`AlignmentRegistry.check_task`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from tlroutes.backbones.registry import Registry, check_kwargs
from tlroutes.errors import ConfigError

__all__ = [
    "CONTEXT",
    "AlignmentRegistry",
    "ALIGNMENTS",
    "register_alignment",
    "create_alignment",
    "list_alignments",
]

#: The keyword arguments every builder takes first; the route fills them in, a user does not.
CONTEXT: tuple[str, ...] = ("features", "classes", "max_steps")

Builder = Callable[..., nn.Module]


class AlignmentRegistry(Registry):
    """A :class:`~tlroutes.backbones.registry.Registry` of alignment losses.

    Adds, per name, what the method needs (``needs_classification``) and checks at registration
    that the builder follows the family's contract (see the module docstring).
    """

    def __init__(self) -> None:
        super().__init__("alignment method")
        self._needs_classification: dict[str, bool] = {}

    def register(
        self, name: str, *, needs_classification: bool = False
    ) -> Callable[[Builder], Builder]:
        """Decorator registering ``builder`` under ``name``; returns it unchanged.

        Args:
            name: the method's short name (the run file's ``recipe.method``).
            needs_classification: the loss reads class predictions (a softmax over the head's
                logits), so it only fits classification tasks. Default False.
        """
        add = super().register(name)

        def decorate(builder: Builder) -> Builder:
            _check_contract(name, builder)
            add(builder)
            self._needs_classification[name] = bool(needs_classification)
            return builder

        return decorate

    def needs_classification(self, name: str) -> bool:
        """Whether the method registered as ``name`` only fits classification tasks."""
        self.get(name)  # an unknown name raises with a suggestion
        return self._needs_classification[name]

    def fitting(self, task_kind: str) -> list[str]:
        """The registered names, sorted, whose needs a task of kind ``task_kind`` meets."""
        return [
            n for n in self.names()
            if task_kind == "classification" or not self._needs_classification[n]
        ]

    def check_task(self, name: str, task_kind: str) -> None:
        """Raise :class:`ConfigError` when method ``name`` cannot align a ``task_kind`` task."""
        if self.needs_classification(name) and task_kind != "classification":
            raise ConfigError(
                f"Alignment method '{name}' reads class predictions, so it needs a "
                f"classification task; for a {task_kind} task use one of: "
                f"{', '.join(self.fitting(task_kind))}."
            )

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` when ``options`` holds a name the builder does not take.

        The context arguments (``features``, ``classes``, ``max_steps``) are not options: the
        route sets them.
        """
        builder = self.get(name)
        for key in options:
            if key in CONTEXT:
                raise ConfigError(
                    f"'{key}' is set by the route for every alignment loss; remove it from "
                    f"the options of '{name}'."
                )
        check_kwargs(builder, options, f"alignment loss '{name}'", skip=len(CONTEXT))

    def build(  # type: ignore[override]  # the family's keyword-only contract
        self, name: str, *, features: int, classes: int, max_steps: int, **options: Any
    ) -> nn.Module:
        """Build the loss registered as ``name`` (see :func:`create_alignment`)."""
        self.check_options(name, options)
        return self.get(name)(
            features=features, classes=classes, max_steps=max_steps, **options
        )


def _check_contract(name: str, builder: Builder) -> None:
    """ConfigError unless ``builder`` takes the :data:`CONTEXT` arguments first, by keyword."""
    target = builder.__init__ if inspect.isclass(builder) else builder
    params = [p for p in inspect.signature(target).parameters.values() if p.name != "self"]
    head = [p.name for p in params[: len(CONTEXT)]]
    keyword = all(
        p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for p in params[: len(CONTEXT)]
    )
    if tuple(head) != CONTEXT or not keyword:
        raise ConfigError(
            f"Alignment loss '{name}': its builder must take ({', '.join(CONTEXT)}) first, by "
            f"keyword (def build(*, features, classes, max_steps, **options)); it takes "
            f"({', '.join(p.name for p in params)})."
        )


#: Every alignment loss, by name; :mod:`tlroutes.objectives.alignment` registers the built-ins.
ALIGNMENTS = AlignmentRegistry()


def register_alignment(
    name: str, *, needs_classification: bool = False
) -> Callable[[Builder], Builder]:
    """Register an alignment-loss builder under ``name`` (see the module docstring's contract).

    Example::

        @register_alignment("coral")
        def build_coral(*, features: int, classes: int, max_steps: int) -> nn.Module:
            return CorrelationAlignmentLoss()

    Args:
        name: the method's short name.
        needs_classification: the loss reads class predictions. Default False.
    """
    return ALIGNMENTS.register(name, needs_classification=needs_classification)


def create_alignment(
    name: str, *, features: int, classes: int, max_steps: int, **options: Any
) -> nn.Module:
    """Build the alignment loss registered as ``name``; call it as ``loss(f_s, f_t, g_s, g_t)``.

    Args:
        name: a registered name (:func:`list_alignments`).
        features: the trunk's feature width D.
        classes: the head's output width K.
        max_steps: steps of the adaptation stage (the adversarial losses' warm-up length).
        **options: the method's own arguments (see its builder's docstring).

    Raises:
        ConfigError: an unknown name (with a suggestion) or an option the method does not take.
    """
    return ALIGNMENTS.build(
        name, features=features, classes=classes, max_steps=max_steps, **options
    )


def list_alignments() -> list[str]:
    """The registered alignment losses' names, sorted."""
    return ALIGNMENTS.names()
