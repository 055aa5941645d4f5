"""How a trunk's computation is shared between tasks: the base class, the registry, helpers.

Hard sharing — one trunk, its features read by every head — is what a plain
:class:`~tlroutes.model.TransferModel` does. The architectures here replace the trunk by a
:class:`TaskSharing` module that returns *each task its own features* (see
:mod:`tlroutes.backbones.sharing` for the list and how to choose). They are built by name from
:data:`SHARINGS`, with their keyword arguments checked as a trunk's are
(:class:`~tlroutes.backbones.registry.Registry`).
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from tlroutes.backbones.registry import Registry, check_kwargs
from tlroutes.errors import ConfigError, TLRoutesError, did_you_mean

#: Builds one fresh trunk (independently initialised, or loaded with its pretrained weights)
#: each time it is called: experts and per-task columns are copies made by calling it.
TrunkFactory = Callable[[], nn.Module]

#: The name under which plain hard sharing is listed (a plain trunk, no sharing module).
HARD = "hard"


class SharedFeatures(NamedTuple):
    """What a :class:`TaskSharing` trunk returns.

    Attributes:
        per_task: ``{task: (B, out_dim) features}`` for the tasks asked for.
        shared: the representation every task's features are computed from and that every
            shared parameter's gradient passes through (MGDA-UB's ``Z``, the ``on="features"``
            variants' input), or ``None`` when the architecture has no such single tensor.
    """

    per_task: dict[str, Tensor]
    shared: Tensor | None


class TaskSharing(nn.Module, abc.ABC):
    """Base of the multi-task trunks: stem output in, one feature vector per task out.

    A subclass sets ``tasks`` (the task names, in order), ``out_dim``, ``input_kind`` and
    ``in_width`` (as a trunk does, so stems and heads fit it unchanged), implements
    :meth:`forward` and :meth:`private_parameters`.
    """

    tasks: tuple[str, ...]
    out_dim: int
    input_kind: str
    in_width: int

    @abc.abstractmethod
    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> SharedFeatures:
        """Each task's features of ``x``; ``tasks`` (default all) limits the work to some."""

    @abc.abstractmethod
    def private_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters only ``task``'s loss reaches (its gates, its own experts …)."""

    @abc.abstractmethod
    def reference_trunk(self) -> nn.Module:
        """One of the trunks it was built from (all alike): what a manifest records to rebuild
        it."""

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not private to one task (reached by several tasks' losses):
        what the gradient weightings combine per-task gradients on."""
        private = {id(p) for t in self.tasks for p in self.private_parameters(t)}
        return [p for p in self.parameters() if id(p) not in private]

    def _asked(self, tasks: Iterable[str] | None) -> list[str]:
        names = list(self.tasks) if tasks is None else list(tasks)
        unknown = [t for t in names if t not in self.tasks]
        if unknown:
            raise ConfigError(
                f"{type(self).__name__} was built for tasks {', '.join(self.tasks)}; it has no "
                f"task '{unknown[0]}'.{did_you_mean(unknown[0], self.tasks)} A head added after "
                "building needs the architecture rebuilt with it."
            )
        return names


def check_tasks(tasks: Sequence[str], what: str) -> tuple[str, ...]:
    """The task names as a tuple; at least one, distinct, usable as module keys."""
    names = tuple(tasks)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"{what} needs one or more distinct task names, got {list(names)}.")
    bad = [n for n in names if not isinstance(n, str) or not n or "." in n]
    if bad:
        raise ConfigError(f"{what}: task names must be non-empty strings without '.', got "
                          f"{bad[0]!r}.")
    return names


def pool_input(x: Tensor, input_kind: str) -> Tensor:
    """``(B, in_width)``: the stem's output averaged over its positions, what a gate reads.

    A ``"vector"`` input is returned as is (the gates of MMoE and PLE read the input vector,
    as in the papers); an image or a sequence ``(B, C, ...)`` is averaged over its spatial or
    time positions, tokens ``(B, T, D)`` over the tokens.
    """
    if input_kind == "vector":
        return x
    if input_kind == "tokens":
        return x.mean(1)
    return x.flatten(2).mean(-1)


def make_experts(make_trunk: TrunkFactory, count: int, what: str) -> list[nn.Module]:
    """``count`` trunks from ``make_trunk``, checked to agree on their widths and input."""
    experts = [make_trunk() for _ in range(count)]
    first = experts[0] if experts else None
    for e in experts[1:]:
        if (e.out_dim, e.input_kind, e.in_width) != (first.out_dim, first.input_kind,
                                                     first.in_width):
            raise ConfigError(f"{what}: the trunk factory built trunks of different widths; "
                              "every copy must have the same out_dim, input_kind and in_width.")
    return experts


def mix(gate_logits: Tensor, experts: Tensor) -> Tensor:
    """``Σ_e softmax(gate_logits)_e · experts[:, e]``: a gate's mixture of ``(B, E, D)``."""
    weights = torch.softmax(gate_logits, dim=-1)
    return (weights.unsqueeze(-1) * experts).sum(1)


class SharingRegistry(Registry):
    """The trunk registry's machinery for builders called as ``cls(make_trunk, tasks, **kw)``;
    ``hard`` is listed too (it builds no module: a plain trunk is hard sharing)."""

    def names(self) -> list[str]:
        return sorted([*self._builders, HARD])

    def get(self, name: str) -> Callable[..., nn.Module]:
        if name == HARD:
            raise ConfigError("'hard' sharing is a plain trunk; build the model without "
                              "sharing (architecture: hard is the default).")
        return super().get(name)


#: Name → multi-task architecture (``mmoe``, ``ple``, ``mtan``, ``cross_stitch``; ``hard`` is
#: the plain trunk).
SHARINGS = SharingRegistry("multi-task architecture")


def register_sharing(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a :class:`TaskSharing` class under ``name``; it is called as
    ``cls(make_trunk, tasks, **kwargs)``."""
    return SHARINGS.register(name)


def list_sharings() -> list[str]:
    """The architecture names a run file's ``recipe.architecture`` accepts, sorted."""
    return SHARINGS.names()


def sharing_name(name: str) -> str:
    """The registered name ``name`` stands for (case-insensitive, ``-`` for ``_``).

    Raises :class:`ConfigError` for an unknown name, with the nearest one.
    """
    if not isinstance(name, str):
        raise ConfigError(f"The architecture must be a name, got {type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    if key not in SHARINGS.names():
        raise ConfigError(f"Unknown multi-task architecture '{name}'."
                          f"{did_you_mean(key, SHARINGS.names())} Registered: "
                          f"{', '.join(SHARINGS.names())}.")
    return key


def check_sharing_args(name: str, args: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``args`` does not fit architecture ``name``'s signature
    (names, types, bounds); ``hard`` takes none."""
    name = sharing_name(name)
    if name == HARD:
        if args:
            raise ConfigError(f"architecture 'hard' takes no architecture_args; got "
                              f"{', '.join(map(str, args))}.")
        return
    check_kwargs(SHARINGS.get(name), dict(args), f"architecture '{name}'", skip=2)


def create_sharing(name: str, make_trunk: TrunkFactory, tasks: Sequence[str],
                   **kwargs: Any) -> TaskSharing:
    """Build architecture ``name`` over trunks from ``make_trunk`` for ``tasks``.

    Arguments are checked first (see :func:`check_sharing_args`), and the size on PyTorch's
    meta device. Raises :class:`ConfigError` for ``hard`` (no module: use a plain trunk), an
    unknown name or bad arguments.
    """
    name = sharing_name(name)
    return SHARINGS.build(name, make_trunk, tuple(tasks), **kwargs)


def check_sharing_fits(name: str, make_trunk: TrunkFactory, tasks: Sequence[str],
                       **kwargs: Any) -> None:
    """Build ``name`` on the meta device (no memory) to refuse a trunk it cannot use — e.g.
    MTAN or cross-stitch over a non-convolutional trunk — before anything trains."""
    name = sharing_name(name)
    if name == HARD:
        return
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            create_sharing(name, make_trunk, tasks, **kwargs)
    except TLRoutesError:
        raise
    except Exception:  # e.g. a pretrained trunk reading its weights: the real build reports
        return
