"""Name → weighting registry: the trunks' decorator (timm style), plus what each method declares.

A method joins with one decorator on its class::

    @register_weighting("pcgrad", gradient_based=True)
    class PCGrad(GradientWeighting): ...

and is built with the one factory of the family, ``create_weighting(name, *, num_tasks, **args)``.
The table is :class:`tlroutes.backbones.registry.Registry` (the trunks' and stems'); this module
only adds the properties a registration declares:

- ``gradient_based`` — the method needs one gradient per task of the shared parameters in one
  process (the gradient-manipulating methods, and GradNorm, which reads per-task gradient norms).
  Under data parallelism each process would combine only its own gradients, so the Multi-Task
  Learning route allows these methods on one device only.
- ``extra`` — the tlroutes extra whose packages the method needs (``"torchjd"`` for TorchJD's
  aggregators), None for the built-in methods.
- ``auxiliary`` — the method serves one main task (its ``main`` argument, the main task's
  number): the others are auxiliary tasks, there only to help it (gradient similarity,
  Auto-Lambda). The Multi-Task Learning route sets ``main`` from the run file's ``importance:``
  and refuses these methods when no main task is named.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tlroutes.backbones.registry import Registry, check_kwargs
from tlroutes.errors import ConfigError, did_you_mean
from tlroutes.objectives.mtl.base import Weighting

__all__ = [
    "WEIGHTINGS",
    "WeightingInfo",
    "available_weightings",
    "check_weighting_args",
    "create_weighting",
    "register_weighting",
    "weighting_info",
    "weighting_name",
]

W = TypeVar("W", bound=type[Weighting])


@dataclass(frozen=True)
class WeightingInfo:
    """What a registration declares about its method."""

    name: str
    gradient_based: bool
    extra: str | None
    auxiliary: bool = False


class WeightingRegistry(Registry):
    """The trunks' :class:`~tlroutes.backbones.registry.Registry`, each entry with its info."""

    def __init__(self) -> None:
        super().__init__("multi-task weighting")
        self.info: dict[str, WeightingInfo] = {}

    def register_with(
        self, name: str, *, gradient_based: bool, extra: str | None, auxiliary: bool = False
    ) -> Callable[[W], W]:
        """Decorator: register a :class:`Weighting` subclass under ``name`` with its properties."""
        plain = super().register(name)

        def decorate(cls: W) -> W:
            if not (isinstance(cls, type) and issubclass(cls, Weighting)):
                raise ConfigError(f"Only Weighting subclasses can be registered, got {cls!r}.")
            first = [p for p in inspect.signature(cls.__init__).parameters if p != "self"][:1]
            if first != ["num_tasks"]:
                raise ConfigError(f"{cls.__name__}.__init__ must take num_tasks first (keyword-"
                                  f"only, like every weighting), got {first}.")
            plain(cls)
            cls.name = name
            self.info[name] = WeightingInfo(name, bool(gradient_based), extra, bool(auxiliary))
            return cls

        return decorate


#: every multi-task weighting, by name
WEIGHTINGS = WeightingRegistry()


def register_weighting(
    name: str, *, gradient_based: bool = False, extra: str | None = None, auxiliary: bool = False
) -> Callable[[W], W]:
    """Register a :class:`Weighting` subclass under ``name`` (its ``name`` attribute is set).

    Args:
        name: the registry name (lower case, ``_`` between words).
        gradient_based: True when the method needs per-task gradients of the shared parameters
            in one process (see the module docstring). Default False.
        extra: the tlroutes extra the method needs, e.g. ``"torchjd"``. Default None.
        auxiliary: True when the method serves one main task and takes its number as ``main``
            (see the module docstring). Default False.

    The class is called as ``cls(num_tasks=K, **args)``: give it keyword-only, typed, documented
    arguments (the factory checks a run file's ``weighting_args`` against them).
    """
    return WEIGHTINGS.register_with(name, gradient_based=gradient_based, extra=extra,
                                    auxiliary=auxiliary)


def weighting_name(name: str) -> str:
    """The registered name ``name`` stands for (case-insensitive; ``-`` may stand for ``_``).

    Raises :class:`ConfigError` for an unknown name, with the nearest registered one.
    """
    if not isinstance(name, str):
        raise ConfigError(f"The weighting name must be a string, got {type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    if key not in WEIGHTINGS.info:
        raise ConfigError(
            f"Unknown multi-task weighting '{name}'.{did_you_mean(key, WEIGHTINGS.info)} "
            f"Registered: {', '.join(available_weightings())}."
        )
    return key


def available_weightings() -> list[str]:
    """The names :func:`create_weighting` accepts, sorted."""
    return WEIGHTINGS.names()


def weighting_info(name: str) -> WeightingInfo:
    """What the registration of ``name`` declares (see :class:`WeightingInfo`)."""
    return WEIGHTINGS.info[weighting_name(name)]


def check_weighting_args(name: str, args: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``args`` holds a name the weighting does not accept.

    ``num_tasks`` is refused: whoever builds the weighting sets it (a route, from its tasks).
    """
    key = weighting_name(name)
    if "num_tasks" in args:
        raise ConfigError(
            f"weighting_args must not set num_tasks: it is the number of tasks, set by the "
            f"caller (remove it from the arguments of '{key}')."
        )
    # skip=1: num_tasks, every weighting's first argument, is not the caller's to give
    check_kwargs(WEIGHTINGS.get(key), dict(args), f"The multi-task weighting '{key}'", skip=1)


def create_weighting(name: str, *, num_tasks: int, **args: Any) -> Weighting:
    """Build the multi-task weighting registered as ``name``.

    Args:
        name: a name of :func:`available_weightings` (case-insensitive; ``-`` may stand for
            ``_``), e.g. ``"ew"``, ``"pcgrad"``, ``"nash_mtl"``, ``"upgrad"``.
        num_tasks: K, the number of tasks.
        **args: the method's own arguments (see its class docstring).

    Raises:
        ConfigError: for an unknown name or argument (with the nearest match), a bad value, or a
            missing extra.
    """
    key = weighting_name(name)
    check_weighting_args(key, args)
    return WEIGHTINGS.get(key)(num_tasks=num_tasks, **args)
