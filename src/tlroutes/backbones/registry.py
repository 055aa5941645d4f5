"""Name → builder registries for trunks and stems (in the manner of timm's model registry).

A registry maps a short name to a class or factory function. Building checks the keyword arguments
against the builder's signature first, so a typo gives a :class:`~tlroutes.errors.ConfigError`
that names the accepted arguments instead of a ``TypeError`` from deep inside a constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from tlroutes.errors import ConfigError, did_you_mean

#: What a trunk may expect from its stem; see :mod:`tlroutes.backbones.trunks`.
INPUT_KINDS: tuple[str, ...] = ("vector", "image", "sequence", "tokens")


class Registry:
    """A name → builder table for one kind of component (``"trunk"`` or ``"stem"``).

    Args:
        what: the component's kind, used in error messages.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._builders: dict[str, Callable[..., nn.Module]] = {}

    def register(self, name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
        """Decorator registering a class or factory under ``name``; returns it unchanged."""

        def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            known = self._builders.get(name)
            if known is not None and known is not builder:
                raise ConfigError(
                    f"A {self.what} named '{name}' is already registered ({known!r}); "
                    "pick another name."
                )
            self._builders[name] = builder
            return builder

        return decorate

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., nn.Module]:
        """The builder registered under ``name``; unknown → :class:`ConfigError` with a hint."""
        try:
            return self._builders[name]
        except KeyError:
            raise ConfigError(
                f"Unknown {self.what} '{name}'.{did_you_mean(name, self._builders)} "
                f"Registered {self.what}s: {', '.join(self.names())}."
            ) from None

    def items(self) -> list[tuple[str, Callable[..., nn.Module]]]:
        """``(name, builder)`` pairs in registration order."""
        return list(self._builders.items())

    def build(self, name: str, *args: Any, **kwargs: Any) -> nn.Module:
        """Call the builder for ``name`` after checking ``kwargs`` against its signature."""
        builder = self.get(name)
        check_kwargs(builder, kwargs, f"{self.what} '{name}'", skip=len(args))
        return builder(*args, **kwargs)


def check_kwargs(
    builder: Callable[..., Any], kwargs: dict[str, Any], where: str, skip: int = 0
) -> None:
    """Raise :class:`ConfigError` when ``kwargs`` holds a name ``builder`` does not accept.

    ``skip`` leading parameters (filled positionally by the caller) are not offered as arguments.
    """
    target = builder.__init__ if inspect.isclass(builder) else builder
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [
        n
        for n, p in params.items()
        if n != "self"
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    accepted = names[skip:]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{where} has no argument '{key}'.{did_you_mean(key, accepted)} "
                f"It accepts: {', '.join(accepted) or '(no arguments)'}."
            )


TRUNKS = Registry("trunk")
STEMS = Registry("stem")


def register_trunk(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a trunk class or factory under ``name``.

    The built module must carry ``out_dim`` (its pooled feature width), ``input_kind`` (one of
    ``"vector"``, ``"image"``, ``"sequence"``, ``"tokens"``) and ``in_width`` (the channel or
    token width it expects from the stem). A class should also carry ``input_kind`` as a class
    attribute so that error messages can say which trunks fit a modality.
    """
    return TRUNKS.register(name)


def register_stem(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a stem class under ``name``.

    The class is called as ``cls(domain, width, **kwargs)`` and must carry class attributes
    ``modalities`` (the domain modalities it reads) and ``input_kind`` (the trunk input it makes).
    """
    return STEMS.register(name)


def list_trunks() -> list[str]:
    """Names of the registered trunks, sorted."""
    return TRUNKS.names()


def list_stems() -> list[str]:
    """Names of the registered stems, sorted."""
    return STEMS.names()


def create_trunk(name: str, **kwargs: Any) -> nn.Module:
    """Build the trunk registered as ``name`` with ``kwargs`` (see each trunk's docstring).

    Raises :class:`ConfigError` for an unknown name (with a suggestion) or an unknown argument.
    """
    return TRUNKS.build(name, **kwargs)


def check_trunk(trunk: nn.Module) -> None:
    """Raise :class:`ConfigError` unless ``trunk`` has ``out_dim``, ``input_kind``, ``in_width``."""
    missing = [a for a in ("out_dim", "input_kind", "in_width") if not hasattr(trunk, a)]
    if missing:
        raise ConfigError(
            f"Trunk {type(trunk).__name__} lacks attribute(s) {', '.join(missing)}. A trunk must "
            "set out_dim (pooled feature width), input_kind (one of "
            f"{', '.join(INPUT_KINDS)}) and in_width (the width it expects from the stem)."
        )
    if trunk.input_kind not in INPUT_KINDS:
        raise ConfigError(
            f"Trunk {type(trunk).__name__} has input_kind '{trunk.input_kind}'; "
            f"use one of {', '.join(INPUT_KINDS)}."
        )
