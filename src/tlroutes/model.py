"""Model assembly: stems → trunk → heads, plus freezing and parameter groups.

A :class:`TransferModel` holds one stem per domain, one shared trunk and one head per task. Every
route is a pattern over these parts (see DESIGN.md): a new head for Task Fine-Tuning, a new stem
for Modality Transfer, a stem per domain for Weight Sharing, a head per task for Multi-Task
Learning. For a multi-task model the trunk may instead be a
:class:`~tlroutes.backbones.sharing.TaskSharing` architecture (MMoE, PLE, MTAN, cross-stitch)
that gives each task its own features; :meth:`TransferModel.task_features` reads them either way.

Parameter names follow the parts: ``stems.<domain>.*``, ``trunk.*``, ``heads.<task>.*``. They
are what :func:`freeze`, :func:`unfreeze` and :func:`param_groups` match against.

Example::

    model = build_model(digits_domain, digits_task, trunk="cnn2d")
    logits = model(x)                      # one stem and one head: names may be left out
    freeze(model, parts=["trunk"])
    print_trainable_parameters(model)
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3, multipliers={"trunk": 0.1}))
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from tlroutes.backbones import check_trunk, create_head, create_stem, create_trunk
from tlroutes.backbones.sharing import (
    HARD,
    SharedFeatures,
    TaskSharing,
    create_sharing,
    sharing_name,
)
from tlroutes.errors import CheckpointError, ConfigError, did_you_mean
from tlroutes.problem import Domain, Task

PARTS: tuple[str, ...] = ("stems", "trunk", "heads")


class TransferModel(nn.Module):
    """Stems → trunk → heads.

    Args:
        stems: one input adapter per domain, by name.
        trunk: the shared feature extractor; returns ``(B, trunk.out_dim)``.
        heads: one output layer per task, by name.
        domains: the :class:`Domain` of each stem, kept for reference. Default ``None``.
        tasks: the :class:`Task` of each head, kept for reference. Default ``None``.

    Attributes ``domains`` and ``tasks`` are plain dicts (not saved in ``state_dict``).
    """

    def __init__(
        self,
        stems: Mapping[str, nn.Module],
        trunk: nn.Module,
        heads: Mapping[str, nn.Module],
        domains: Mapping[str, Domain] | None = None,
        tasks: Mapping[str, Task] | None = None,
    ) -> None:
        super().__init__()
        self.stems = nn.ModuleDict(dict(stems))
        self.trunk = trunk
        self.heads = nn.ModuleDict(dict(heads))
        self.domains: dict[str, Domain] = dict(domains or {})
        self.tasks: dict[str, Task] = dict(tasks or {})

    # -- lookups -------------------------------------------------------------------------------

    def get_stem(self, name: str | None = None) -> nn.Module:
        """The stem called ``name``; ``None`` is allowed when the model has exactly one."""
        return _pick(self.stems, name, "stem")

    def get_head(self, name: str | None = None) -> nn.Module:
        """The head called ``name``; ``None`` is allowed when the model has exactly one."""
        return _pick(self.heads, name, "head")

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: Tensor, stem: str | None = None, head: str | None = None) -> Tensor:
        """Outputs of head ``head`` on inputs ``x`` read by stem ``stem``.

        Names may be left out when there is only one stem / head; an unknown name raises
        :class:`ConfigError` listing the ones there are.
        """
        if isinstance(self.trunk, TaskSharing):
            name = _head_name(self.heads, head)
            return self.heads[name](self.task_features(x, stem, [name]).per_task[name])
        return _pick(self.heads, head, "head")(self.trunk(_pick(self.stems, stem, "stem")(x)))

    def features(self, x: Tensor, stem: str | None = None) -> Tensor:
        """Trunk features ``(B, trunk.out_dim)`` of ``x`` read by stem ``stem``.

        A multi-task trunk (a :class:`TaskSharing`) has no single feature tensor: it raises
        :class:`ConfigError` pointing to :meth:`task_features`.
        """
        if isinstance(self.trunk, TaskSharing):
            raise ConfigError(
                f"This model's trunk ({type(self.trunk).__name__}) gives each task its own "
                "features; read them with model.task_features(x), or a task's outputs with "
                "model(x, head=<task>).")
        return self.trunk(_pick(self.stems, stem, "stem")(x))

    def task_features(
        self, x: Tensor, stem: str | None = None, tasks: Iterable[str] | None = None
    ) -> SharedFeatures:
        """Each task's features and the shared representation, for any trunk.

        Args:
            tasks: the heads whose features are wanted. Default ``None``: every head.

        Returns a :class:`SharedFeatures`: ``per_task[name]`` ``(B, out_dim)``, and ``shared``,
        the tensor every task's features come from (a plain trunk's features; an MMoE's
        stacked expert outputs; ``None`` for architectures without one).
        """
        names = list(self.heads.keys() if tasks is None else tasks)
        h = _pick(self.stems, stem, "stem")(x)
        if isinstance(self.trunk, TaskSharing):
            return self.trunk(h, names)
        feats = self.trunk(h)
        return SharedFeatures({n: feats for n in names}, feats)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters several tasks' losses reach: the stems and the trunk, less a
        multi-task trunk's task-private parts (its gates, own experts, attention masks)."""
        trunk = (self.trunk.shared_parameters() if isinstance(self.trunk, TaskSharing)
                 else list(self.trunk.parameters()))
        return [*self.stems.parameters(), *trunk]

    def forward_heads(
        self, x: Tensor, stem: str | None = None, heads: Iterable[str] | None = None
    ) -> dict[str, Tensor]:
        """Outputs of several heads on shared features (multi-task): ``{head name: output}``.

        Args:
            heads: the heads to run. Default ``None``: all of them.
        """
        names = list(self.heads.keys() if heads is None else heads)
        for name in names:
            _pick(self.heads, name, "head")
        feats = self.task_features(x, stem, names).per_task
        return {name: self.heads[name](feats[name]) for name in names}

    # -- editing -------------------------------------------------------------------------------

    def add_stem(
        self, name: str, module: nn.Module, domain: Domain | None = None, replace: bool = False
    ) -> None:
        """Add a stem (e.g. for a new domain or modality the trunk is carried to).

        Args:
            name: the stem's key.
            module: the stem; it must return what the trunk reads.
            domain: the stem's domain, kept in ``self.domains``. Default ``None``.
            replace: allow replacing a stem of the same name. Default ``False``.
        """
        _add(self.stems, name, module, "stem", replace)
        if domain is not None:
            self.domains[name] = domain

    def add_head(
        self, name: str, module: nn.Module, task: Task | None = None, replace: bool = False
    ) -> None:
        """Add a head (e.g. for the new task the trunk is carried to).

        Args:
            name: the head's key.
            module: the head; it reads ``(B, trunk.out_dim)``.
            task: the head's task, kept in ``self.tasks``. Default ``None``.
            replace: allow replacing a head of the same name. Default ``False``.
        """
        _add(self.heads, name, module, "head", replace)
        if task is not None:
            self.tasks[name] = task

    def remove_stem(self, name: str) -> nn.Module:
        """Remove the stem ``name`` (and its domain entry); returns the module."""
        module = _pick(self.stems, name, "stem")
        del self.stems[name]
        self.domains.pop(name, None)
        return module

    def remove_head(self, name: str) -> nn.Module:
        """Remove the head ``name`` (and its task entry); returns the module."""
        module = _pick(self.heads, name, "head")
        del self.heads[name]
        self.tasks.pop(name, None)
        return module

    def print_trainable_parameters(self) -> None:
        """Print :func:`trainable_summary` (as HF PEFT does)."""
        print(trainable_summary(self))


def _pick(table: nn.ModuleDict, name: str | None, what: str) -> nn.Module:
    if name is None:
        if len(table) == 1:
            return next(iter(table.values()))
        raise ConfigError(
            f"This model has {len(table)} {what}s ({', '.join(table.keys()) or 'none'}); "
            f"pass {what}=<name> to say which."
        )
    try:
        return table[name]
    except KeyError:
        raise ConfigError(
            f"No {what} named '{name}'.{did_you_mean(name, table.keys())} "
            f"This model's {what}s: {', '.join(table.keys()) or 'none'}."
        ) from None


def _head_name(table: nn.ModuleDict, name: str | None) -> str:
    """The key of the head ``name`` picks (the only one when ``name`` is None)."""
    module = _pick(table, name, "head")
    return next(k for k, v in table.items() if v is module)


def _add(table: nn.ModuleDict, name: str, module: nn.Module, what: str, replace: bool) -> None:
    if not isinstance(module, nn.Module):
        raise ConfigError(f"A {what} must be a torch.nn.Module, got {type(module).__name__}.")
    if name in table and not replace:
        raise ConfigError(
            f"This model already has a {what} named '{name}'; pick another name or pass "
            "replace=True."
        )
    table[name] = module


# -- building ----------------------------------------------------------------------------------


def _keyed(items: Any, cls: type, what: str) -> dict[str, Any]:
    """``{name: item}`` from one item, a sequence of items (keyed by ``.name``) or a mapping."""
    if isinstance(items, cls):
        return {items.name: items}
    if isinstance(items, Mapping):
        out = dict(items)
    elif isinstance(items, Sequence) and not isinstance(items, str):
        out = {}
        for item in items:
            if getattr(item, "name", None) in out:
                raise ConfigError(
                    f"Two {what}s are named '{item.name}'; give them distinct names or pass a "
                    f"dict {{key: {what}}}."
                )
            out[getattr(item, "name", None)] = item
    else:
        raise ConfigError(
            f"Expected a {cls.__name__}, a list or a dict of them, got {type(items).__name__}."
        )
    bad = [k for k, v in out.items() if not isinstance(v, cls)]
    if bad or not out:
        raise ConfigError(f"Every {what} must be a {cls.__name__} (and at least one is needed).")
    return out


def _per_key(args: Any, keys: Iterable[str]) -> dict[str, Any]:
    """Split ``args`` into per-key values: a dict whose keys are all stem/head keys and whose
    values are all dicts or ``None`` is per-key; anything else applies to every key."""
    keys = list(keys)
    per_key = (
        isinstance(args, Mapping)
        and args
        and set(args) <= set(keys)
        and all(isinstance(v, (Mapping, type(None))) for v in args.values())
    )
    if per_key:
        return {k: args.get(k) for k in keys}
    return dict.fromkeys(keys, args)


def build_model(
    domains: Domain | Sequence[Domain] | Mapping[str, Domain],
    tasks: Task | Sequence[Task] | Mapping[str, Task],
    trunk: str | nn.Module = "cnn2d",
    trunk_args: Mapping[str, Any] | None = None,
    stem: str | Mapping[str, str] = "auto",
    stem_args: Mapping[str, Any] | None = None,
    head_args: Mapping[str, Any] | None = None,
    sharing: str = HARD,
    sharing_args: Mapping[str, Any] | None = None,
) -> TransferModel:
    """Assemble a :class:`TransferModel`: one stem per domain, one trunk, one head per task.

    Keys: a single :class:`Domain` / :class:`Task` or a list of them is keyed by its ``name``
    (``domain.name``, ``task.name``); a dict is keyed by its own keys. With one stem and one head
    the names may be left out of ``model(x)``.

    Args:
        domains: the input domains (one stem each).
        tasks: the tasks (one head each).
        trunk: a registered trunk name (see ``list_trunks()``) or a ready ``nn.Module`` with
            ``out_dim``, ``input_kind`` and ``in_width``. Default ``"cnn2d"``.
        trunk_args: arguments for :func:`create_trunk` when ``trunk`` is a name. Default ``None``.
        stem: the stem kind for every domain, or ``{domain key: kind}``. Default ``"auto"`` (the
            adapter for each domain's modality and the trunk's input kind).
        stem_args: arguments for every stem (e.g. ``{"vocab_size": 1000}``), or
            ``{domain key: {...}}`` for different arguments per domain. Default ``None``.
        head_args: arguments for :func:`create_head` (``hidden``, ``dropout``), for every head
            or ``{task key: {...}}``. Default ``None``.
        sharing: how the tasks share the trunk: ``"hard"`` (default: one trunk read by every
            head) or a multi-task architecture (``"mmoe"``, ``"ple"``, ``"mtan"``,
            ``"cross_stitch"``; see :mod:`tlroutes.backbones.sharing`), built over copies of
            the trunk ``trunk`` names (a name is needed: experts are built anew, not copied).
        sharing_args: arguments of the architecture (e.g. ``{"experts": 3}``). Default
            ``None``.
    """
    domain_map = _keyed(domains, Domain, "domain")
    task_map = _keyed(tasks, Task, "task")
    sharing = sharing_name(sharing)
    if sharing != HARD:
        if not isinstance(trunk, str):
            raise ConfigError(f"sharing '{sharing}' builds its trunks from a trunk name (each "
                              "expert or column initialised anew); got a module.")
        t_args = dict(trunk_args or {})
        trunk_module = create_sharing(sharing, lambda: create_trunk(trunk, **t_args),
                                      list(task_map), **dict(sharing_args or {}))
    elif sharing_args:
        raise ConfigError("sharing_args only apply with a sharing architecture other than "
                          "'hard'.")
    elif isinstance(trunk, str):
        trunk_module = create_trunk(trunk, **dict(trunk_args or {}))
    elif isinstance(trunk, nn.Module):
        if trunk_args:
            raise ConfigError("trunk_args only apply when trunk is a name; got a module as well.")
        trunk_module = trunk
    else:
        raise ConfigError(f"trunk must be a name or an nn.Module, got {type(trunk).__name__}.")
    check_trunk(trunk_module)
    kinds = dict(stem) if isinstance(stem, Mapping) else dict.fromkeys(domain_map, stem)
    unknown = set(kinds) - set(domain_map)
    if unknown:
        raise ConfigError(f"stem names domain(s) {sorted(unknown)} not among {list(domain_map)}.")
    s_args = _per_key(stem_args, domain_map)
    h_args = _per_key(head_args, task_map)
    stems = {
        key: create_stem(d, trunk_module, kinds.get(key, "auto"), **dict(s_args[key] or {}))
        for key, d in domain_map.items()
    }
    heads = {
        key: create_head(t, trunk_module.out_dim, **dict(h_args[key] or {}))
        for key, t in task_map.items()
    }
    return TransferModel(stems, trunk_module, heads, domains=domain_map, tasks=task_map)


# -- freezing ----------------------------------------------------------------------------------


def _as_list(items: str | Iterable[str]) -> list[str]:
    return [items] if isinstance(items, str) else list(items)


def _matches(key: str, name: str) -> bool:
    """True when parameter ``name`` falls under ``key``: a glob pattern (``*``, ``?``, ``[``) is
    matched with fnmatch; otherwise ``key`` is a part (module path) or a full parameter name."""
    if any(c in key for c in "*?["):
        return fnmatch.fnmatchcase(name, key)
    return name == key or name.startswith(key + ".")


def _examples(names: list[str], n: int = 8) -> str:
    step = max(1, len(names) // n)
    shown = names[::step][:n]
    return f"{', '.join(shown)}{' …' if len(names) > len(shown) else ''} ({len(names)} in all)"


def _select(
    model: nn.Module, parts: Iterable[str], patterns: Iterable[str], verb: str
) -> list[str]:
    parts, patterns = _as_list(parts), _as_list(patterns)
    if not parts and not patterns:
        raise ConfigError(f"{verb}() was given no parts and no patterns; say what to {verb}.")
    names = [n for n, _ in model.named_parameters()]
    modules = {n for n, _ in model.named_modules() if n}
    for part in parts:
        if any(c in part for c in "*?["):
            raise ConfigError(f"'{part}' looks like a pattern; pass it in patterns=, not parts=.")
        if part not in modules and part not in names:
            tops = [n for n in modules if n.count(".") <= 1]
            raise ConfigError(
                f"{verb}(): this model has no part '{part}'.{did_you_mean(part, tops)} "
                f"Parts: {', '.join(sorted(tops))}."
            )
    selected: set[str] = set()
    empty = []
    for key in parts + patterns:
        hits = {n for n in names if _matches(key, n)}
        # A part that exists but holds no parameters (e.g. the parameter-free imagenet stem) has
        # nothing to select; only patterns (and parameter names) that match nothing are errors.
        if not hits and not (key in parts and key in modules):
            empty.append(key)
        selected |= hits
    if empty:
        raise ConfigError(
            f"{verb}(): {', '.join(repr(k) for k in empty)} matched no parameter. Parameter names "
            f"look like: {_examples(names)}."
        )
    return [n for n in names if n in selected]


def freeze(
    model: nn.Module, parts: str | Iterable[str] = (), patterns: str | Iterable[str] = ()
) -> list[str]:
    """Stop gradients for the parameters under ``parts`` or matching ``patterns``.

    Args:
        model: any module; for a :class:`TransferModel` the parts are ``"stems"``, ``"trunk"``,
            ``"heads"``, ``"stems.<name>"``, ``"heads.<name>"`` (any module path works, e.g.
            ``"trunk.blocks.0"``).
        parts: module paths whose parameters are frozen. Default ``()``.
        patterns: fnmatch patterns over parameter names, e.g. ``"trunk.blocks.0.*"`` or
            ``"*norm*"``. Default ``()``.

    Returns the names of the parameters selected (now frozen), in model order. Raises
    :class:`ConfigError` when nothing is given, a part is unknown, or any part or pattern matches
    no parameter. Buffers (e.g. BatchNorm running statistics) still update in ``train()`` mode;
    put a frozen module in ``eval()`` to keep them fixed.
    """
    names = _select(model, parts, patterns, "freeze")
    _set_requires_grad(model, names, False)
    return names


def unfreeze(
    model: nn.Module, parts: str | Iterable[str] = (), patterns: str | Iterable[str] = ()
) -> list[str]:
    """Let gradients flow again to the parameters selected; same arguments as :func:`freeze`."""
    names = _select(model, parts, patterns, "unfreeze")
    _set_requires_grad(model, names, True)
    return names


def _set_requires_grad(model: nn.Module, names: Iterable[str], flag: bool) -> None:
    wanted = set(names)
    for name, param in model.named_parameters():
        if name in wanted:
            param.requires_grad_(flag)


def frozen_state(model: nn.Module) -> list[str]:
    """Names of the parameters that do not require gradients (save this to resume freezing)."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def apply_frozen_state(model: nn.Module, names: Iterable[str]) -> None:
    """Freeze exactly ``names`` and unfreeze every other parameter (undoes :func:`frozen_state`).

    Raises :class:`CheckpointError` when a name is not a parameter of ``model``.
    """
    names = set(names)
    params = dict(model.named_parameters())
    missing = sorted(names - set(params))
    if missing:
        raise CheckpointError(
            f"The saved frozen state names {len(missing)} parameter(s) this model lacks "
            f"(e.g. {', '.join(missing[:3])}); it belongs to another model."
        )
    for name, param in params.items():
        param.requires_grad_(name not in names)


# -- parameter groups --------------------------------------------------------------------------


def param_groups(
    model: nn.Module,
    lr: float,
    multipliers: Mapping[str, float] | None = None,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with per-part learning-rate multipliers (discriminative LRs).

    Args:
        model: the model.
        lr: the base learning rate.
        multipliers: ``{part or fnmatch pattern: multiplier}``, e.g. ``{"trunk": 0.1,
            "heads": 1.0, "*norm*": 0.0}``. A parameter takes the multiplier of the longest key
            that matches it (ties: the first given); unmatched parameters use 1.0. Default
            ``None``.
        weight_decay: weight decay for every group. Default ``0.0``.

    Returns a list of ``{"name", "params", "lr", "lr_mult", "weight_decay"}`` dicts, ready for
    any ``torch.optim`` optimizer. Only trainable parameters are included, each in exactly one
    group; the group of unmatched parameters is named ``"default"``; empty groups are left out.
    A key that matches no parameter of the model raises :class:`ConfigError`.
    """
    multipliers = dict(multipliers or {})
    named = list(model.named_parameters())
    all_names = [n for n, _ in named]
    empty = [k for k in multipliers if not any(_matches(k, n) for n in all_names)]
    if empty:
        raise ConfigError(
            f"param_groups(): multiplier key(s) {', '.join(repr(k) for k in empty)} matched no "
            f"parameter. Parameter names look like: {_examples(all_names)}."
        )
    by_length = sorted(multipliers, key=len, reverse=True)  # stable: ties keep the given order
    members: dict[str | None, list] = {None: [], **{k: [] for k in multipliers}}
    for name, param in named:
        if param.requires_grad:
            key = next((k for k in by_length if _matches(k, name)), None)
            members[key].append(param)
    groups = []
    for key, params in members.items():
        if params:
            mult = 1.0 if key is None else float(multipliers[key])
            groups.append(
                {
                    "name": "default" if key is None else key,
                    "params": params,
                    "lr": lr * mult,
                    "lr_mult": mult,
                    "weight_decay": weight_decay,
                }
            )
    return groups


# -- counting ----------------------------------------------------------------------------------


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``module`` (shared tensors counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def trainable_summary(model: nn.Module) -> str:
    """A PEFT-style line plus a per-part breakdown, e.g.::

        trainable params: 1,234 || all params: 5,678 || trainable%: 21.73
          stems          trainable 100 / 100
            digits       trainable 100 / 100
          trunk          trainable 0 / 4,444
          heads          trainable 1,134 / 1,134
            digits       trainable 1,134 / 1,134

    For a :class:`TransferModel` the parts are stems / trunk / heads, with each named stem and
    head beneath; for any other module, its direct children.
    """
    trainable, total = count_parameters(model, True), count_parameters(model)
    pct = 100.0 * trainable / total if total else 0.0
    lines = [f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {pct:.2f}"]

    def row(label: str, module: nn.Module, indent: int) -> str:
        t, a = count_parameters(module, True), count_parameters(module)
        return f"{' ' * indent}{label:<{16 - indent}} trainable {t:,} / {a:,}"

    if isinstance(model, TransferModel):
        for part in PARTS:
            module = getattr(model, part)
            lines.append(row(part, module, 2))
            if isinstance(module, nn.ModuleDict):
                lines.extend(row(name, sub, 4) for name, sub in module.items())
    else:
        lines.extend(row(name, child, 2) for name, child in model.named_children())
    return "\n".join(lines)


def print_trainable_parameters(model: nn.Module) -> None:
    """Print :func:`trainable_summary` of ``model``."""
    print(trainable_summary(model))
