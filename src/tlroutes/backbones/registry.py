"""Name → builder registries for trunks and stems (in the manner of timm's model registry).

A registry maps a short name to a class or factory function. Building checks the keyword arguments
against the builder's signature first — each name, and each value against the parameter's type
hint and the bounds below — so a typo, a float depth or ``dim: 1e308`` gives a
:class:`~tlroutes.errors.ConfigError` that names the argument, the type it takes and its range,
instead of a ``TypeError`` from deep inside a constructor. A built-in builder's size is then
measured on PyTorch's ``meta`` device (no memory is allocated), so sizes the machine cannot hold
are refused before they are allocated.
"""

from __future__ import annotations

import inspect
import math
import typing
import warnings
from collections.abc import Callable
from typing import Any

import torch
from pydantic import ConfigDict, TypeAdapter, ValidationError
from torch import nn

from tlroutes.config import check_memory
from tlroutes.errors import ConfigError, TLRoutesError, did_you_mean, shorten

#: The largest integer a builder argument may take, in size (a width, depth, kernel or token
#: count): far above any network that fits in memory, far below an integer overflow. A builder
#: may tighten it with ``Annotated[int, Field(ge=..., le=...)]`` in its signature.
MAX_INT_ARG = 1 << 24
#: The largest float a builder argument may take, in size (a ratio, a rate, a probability).
MAX_FLOAT_ARG = 1e6
#: The longest string argument (a path, a mode name), in characters.
MAX_STR_ARG = 4096
#: Bytes one parameter costs in training: float32 weight, gradient and two optimizer moments.
BYTES_PER_PARAMETER = 16
# Strict: a string is not an int, a float is not an int (no silent truncation of depth: 2.5).
# Arbitrary classes (an nn.Module argument) are checked with isinstance.
_STRICT = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)

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
        #: Functions asked, in turn, for a builder of a name not registered (e.g. ``timm:...``,
        #: see :mod:`tlroutes.backbones.named`); each returns a builder or None.
        self.resolvers: list[Callable[[str], Callable[..., nn.Module] | None]] = []

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

    def find(self, name: str) -> Callable[..., nn.Module] | None:
        """The builder for ``name``: registered, or made by a resolver; else None."""
        builder = self._builders.get(name)
        if builder is None and isinstance(name, str):
            for resolve in self.resolvers:
                builder = resolve(name)
                if builder is not None:
                    break
        return builder

    def get(self, name: str) -> Callable[..., nn.Module]:
        """The builder for ``name`` (see :meth:`find`); unknown → :class:`ConfigError` with a
        hint."""
        builder = self.find(name)
        if builder is not None:
            return builder
        hint = (" Or name one by origin: 'timm:<model>', 'hf:<folder or hub id>', "
                "'module:<package.module:factory>'."
                if self.resolvers else "")
        raise ConfigError(
            f"Unknown {self.what} '{shorten(str(name))}'.{did_you_mean(name, self._builders)} "
            f"Registered {self.what}s: {', '.join(self.names())}.{hint}"
        )

    def items(self) -> list[tuple[str, Callable[..., nn.Module]]]:
        """``(name, builder)`` pairs in registration order."""
        return list(self._builders.items())

    def build(self, name: str, *args: Any, **kwargs: Any) -> nn.Module:
        """Call the builder for ``name`` after checking ``kwargs`` (names, types, bounds, the
        memory the module needs); a builder's own refusal of a user's argument becomes a
        :class:`ConfigError` naming the arguments."""
        builder = self.get(name)
        where = f"{self.what} '{name}'"
        check_kwargs(builder, kwargs, where, skip=len(args))
        if kwargs:
            check_size(builder, where, *args, **kwargs)
        try:
            module = builder(*args, **kwargs)
        except (TLRoutesError, KeyboardInterrupt):
            raise
        except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
            if not kwargs:  # the builder's defaults failing is a bug, not the user's input
                raise
            raise ConfigError(f"{where} cannot be built with {shorten(kwargs, 200)}: "
                              f"{shorten(str(exc), 300)}") from exc
        # How it was built, so a run's manifest can rebuild it (tlroutes.manifest).
        module.__dict__["tlroutes_factory"] = (self.what, name, dict(kwargs))
        return module


def check_kwargs(
    builder: Callable[..., Any], kwargs: dict[str, Any], where: str, skip: int = 0
) -> None:
    """Raise :class:`ConfigError` when ``kwargs`` does not fit ``builder``'s signature.

    Each name must be a parameter of ``builder``; each value must have the parameter's type
    (its type hint, checked strictly: ``2.5`` or ``"3"`` is not an ``int``; a YAML list passes
    for a tuple) and lie within the bounds every argument shares: integers at most
    :data:`MAX_INT_ARG` in size, floats finite and at most :data:`MAX_FLOAT_ARG`, strings at
    most :data:`MAX_STR_ARG` characters. A parameter without a hint gets the bounds only.

    ``skip`` leading parameters (filled positionally by the caller) are not offered as arguments.
    """
    target = builder.__init__ if inspect.isclass(builder) else builder
    params = inspect.signature(target).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = [
        n
        for n, p in params.items()
        if n != "self"
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    accepted = names[skip:]
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # a hint naming what only exists for type checkers: bounds only
        hints = {}
    for key, value in kwargs.items():
        if key not in accepted and not open_ended:
            raise ConfigError(
                f"{where} has no argument '{shorten(str(key))}'.{did_you_mean(key, accepted)} "
                f"It accepts: {', '.join(accepted) or '(no arguments)'}."
            )
        hint = hints.get(key)
        if hint is not None and hint is not Any:
            _check_type(where, key, value, hint)
        _check_bounds(where, key, value, hint)


def _bounds(hint: Any) -> list[str]:
    """The bounds an ``Annotated[int, Field(ge=..., le=...)]`` hint sets, as ``">= 1"``."""
    if typing.get_origin(hint) is not typing.Annotated:
        return []
    out = []
    for meta in typing.get_args(hint)[1:]:
        for c in getattr(meta, "metadata", [meta]):
            for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(c, attr, None) is not None:
                    out.append(f"{sign} {getattr(c, attr)}")
    return out


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Annotated:
        base = _type_name(typing.get_args(hint)[0])
        bounds = _bounds(hint)
        return f"{base} {' and '.join(bounds)}" if bounds else base
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _check_type(where: str, key: str, value: Any, hint: Any) -> None:
    try:
        adapter = TypeAdapter(hint, config=_STRICT)
        adapter.validate_python(value)
        return
    except ValidationError as exc:
        first = exc.errors()[0]["msg"]
    except Exception:  # a hint pydantic cannot check (an arbitrary class): trust the builder
        return
    if isinstance(value, list):  # YAML has lists only; a tuple parameter takes one
        try:
            adapter.validate_python(tuple(value))
            return
        except (ValidationError, TypeError):
            pass
    raise ConfigError(
        f"{where}: argument '{key}' takes {_type_name(hint)}{_range(hint)}; got "
        f"{shorten(value, quote=True)} ({type(value).__name__}): {first[:1].lower()}{first[1:]}.")


def _range(hint: Any) -> str:
    if _bounds(hint):  # the hint's own bounds, already named
        return ""
    text = _type_name(hint)
    parts = []
    if "int" in text:
        parts.append(f"integers at most {MAX_INT_ARG:,} in size")
    if "float" in text:
        parts.append(f"finite numbers at most {MAX_FLOAT_ARG:g} in size")
    return f" ({'; '.join(parts)})" if parts else ""


def _check_bounds(where: str, key: str, value: Any, hint: Any, depth: int = 0) -> None:
    """The bounds every argument shares, through lists and dicts (an int inside channels)."""
    problem = None
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT_ARG:
            problem = f"integers at most {MAX_INT_ARG:,} in size"
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_FLOAT_ARG:
            problem = f"finite numbers at most {MAX_FLOAT_ARG:g} in size"
    elif isinstance(value, str):
        if len(value) > MAX_STR_ARG:
            problem = f"strings of at most {MAX_STR_ARG:,} characters"
    elif isinstance(value, list | tuple | dict):
        if depth > 4 or len(value) > 10_000:
            problem = "lists and mappings of at most 10,000 items, 4 levels deep"
        else:
            items = value.values() if isinstance(value, dict) else value
            for item in items:
                _check_bounds(where, key, item, hint, depth + 1)
            return
    if problem:
        taken = f"{_type_name(hint)}, " if hint is not None else ""
        raise ConfigError(f"{where}: argument '{key}' takes {taken}{problem}; got "
                          f"{shorten(value, quote=True)}.")


def check_size(builder: Callable[..., nn.Module], where: str, *args: Any, **kwargs: Any) -> None:
    """Refuse arguments that make a module larger than this machine's memory can train.

    The module is built on PyTorch's ``meta`` device (shapes only, no memory) and its parameters
    counted at :data:`BYTES_PER_PARAMETER` bytes each. Builders that load weights from files (the
    pretrained trunks) are not probed: their size comes from the file, not from the arguments.
    """
    if getattr(builder, "__module__", "").startswith(("tlroutes.backbones.pretrained",
                                                       "tlroutes.backbones.named")):
        return
    try:
        # The probe's own warnings (a zero-sized layer) are the real build's to give.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = builder(*args, **kwargs)
        count = sum(p.numel() for p in probe.parameters()) + sum(
            b.numel() for b in probe.buffers())
    except TLRoutesError:
        raise
    except Exception:  # the real build reports what is wrong
        return
    check_memory(f"{where} with {shorten(kwargs, 200)}", count * BYTES_PER_PARAMETER,
                 f"{count:,} parameters × {BYTES_PER_PARAMETER} bytes: weights, gradients and "
                 "two optimizer moments", "choose smaller sizes")


def check_model_args(trunk: str, trunk_args: dict[str, Any], stem: str = "auto",
                     stem_args: dict[str, Any] | None = None) -> None:
    """Check a run file's ``model:`` block before anything is loaded or trained.

    The trunk's name and arguments are checked as :meth:`Registry.build` would, its size
    included; a named stem's arguments by name and type (its size depends on the data, so it
    is measured when it is built). ``stem: auto`` and per-domain ``stem_args`` are checked when
    the stems are built.

    Raises:
        ConfigError: an unknown name, an argument that does not fit, or a trunk too large for
            this machine's memory.
    """
    builder = TRUNKS.get(trunk)
    where = f"trunk '{trunk}'"
    check_kwargs(builder, trunk_args, where)
    if trunk_args:
        check_size(builder, where, **trunk_args)
    stem_args = stem_args or {}
    if stem != "auto" and not any(isinstance(v, dict) for v in stem_args.values()):
        check_kwargs(STEMS.get(stem), stem_args, f"stem '{stem}'", skip=2)


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
