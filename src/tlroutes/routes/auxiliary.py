"""Auxiliary-task learning inside the Multi-Task Learning route: one main task, the others there
only to help it (the run file's ``importance: {<problem>: main}``).

With a main task named, the route selects on the main task's validation metric, reports the main
task's test metric as the run's metric, and compares it with the main task trained alone for
the same number of optimizer steps. This module holds what that needs besides the route's own
joint stage: the checks of the recipe against the importance (:func:`check_recipe`), the
arguments an auxiliary weighting takes from the run (:func:`weighting_args`), Auto-Lambda's
validation loss (:func:`validation_loss`), and the "does this auxiliary help?" ablation's table
(:func:`ablation_rows`, :func:`ablation_blocks`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call

from tlroutes.errors import ConfigError
from tlroutes.objectives.mtl import weighting_info
from tlroutes.objectives.tasks import task_loss
from tlroutes.problem import Split, Task
from tlroutes.reporting.document import Block, Cell, Notice, Table
from tlroutes.reporting.tables import fmt_values
from tlroutes.seeding import derive_seed
from tlroutes.train.streams import Stream

__all__ = ["ALONE", "ALL", "ablation_blocks", "ablation_rows", "check_recipe",
           "validation_loss", "weighting_args"]

#: the ablation's rows besides "main + <auxiliary>": the main task alone (the same-steps
#: baseline) and the main task with every auxiliary (the run itself)
ALONE, ALL = "main alone", "main + all auxiliaries"


def check_recipe(weighting: str, args: Mapping[str, Any], ablation: bool, main: str | None,
                 tasks: Sequence[str]) -> None:
    """Raise :class:`ConfigError` when the recipe and ``importance:`` do not fit together.

    An auxiliary weighting (gradsim, auto_lambda) needs a main task; ``main`` in its arguments
    is refused (``importance:`` sets it); the ablation needs a main task and at least two
    auxiliaries (with one, main + each auxiliary is the run itself).
    """
    if weighting_info(weighting).auxiliary and main is None:
        raise ConfigError(
            f"weighting '{weighting}' serves a main task with auxiliary ones, but the run file "
            f"names no main task: add importance: {{{tasks[0]}: main}} (the others become "
            "auxiliary), or choose a weighting for equally important tasks (ew, nash_mtl …).")
    if "main" in args:
        raise ConfigError(
            "weighting_args must not set main: the main task comes from the run file's "
            "importance: block (e.g. importance: {" + tasks[0] + ": main}).")
    if ablation:
        if main is None:
            raise ConfigError(
                "recipe.ablation: true asks whether each auxiliary task helps the main task, but "
                "the run file names no main task: add importance: {" + tasks[0] + ": main}.")
        if len(tasks) < 3:
            aux = [t for t in tasks if t != main]
            raise ConfigError(
                f"recipe.ablation: true needs at least two auxiliary tasks; with one "
                f"({', '.join(aux)}) main + each auxiliary is the run itself, and main alone "
                "is its baseline. Remove ablation:, or add auxiliary problems.")


def weighting_args(weighting: str, args: Mapping[str, Any], tasks: Sequence[str],
                   main: str | None, lr: float,
                   known: Sequence[str] | None = None) -> dict[str, Any]:
    """The weighting's arguments for a joint stage over ``tasks``: ``main`` (the main task's
    number) for an auxiliary weighting, Auto-Lambda's virtual step ``lr`` (the run's rate
    unless given), and ``fixed``'s ``weights`` given by task name turned into task order
    (unnamed tasks: 1). ``known``: every task of the run (an ablation stage trains a subset),
    which the names are checked against; default ``tasks``."""
    out = dict(args)
    if weighting_info(weighting).auxiliary and main is not None:
        out["main"] = list(tasks).index(main)
    if weighting == "auto_lambda":
        out.setdefault("lr", lr)
    if weighting == "fixed" and isinstance(out.get("weights"), Mapping):
        named = dict(out["weights"])
        unknown = [n for n in named if n not in (known or tasks)]
        if unknown:
            raise ConfigError(f"weighting_args.weights names {', '.join(map(repr, unknown))}, "
                              f"not a task of this run ({', '.join(known or tasks)}).")
        out["weights"] = [named.get(n, 1.0) for n in tasks]
    return out


def validation_loss(model: nn.Module, split: Split, task: Task, name: str, batch_size: int,
                    seed: int) -> Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor]:
    """Auto-Lambda's ``validation(params, values)``: the main task's loss on the next batch of
    its validation split, with the model's parameters replaced (a fresh batch per call, drawn
    as a seeded :class:`Stream` draws it, so a resumed run sees the same batches).

    Buffers are passed as copies: batch norm's running statistics do not learn from the
    validation batches (as in the reference code, whose lookahead runs on a copy of the model).
    """
    stream = Stream(split, batch_size, seed=derive_seed(seed, "auto_lambda", "val"),
                    name="main-validation")
    names = {id(p): n for n, p in model.named_parameters()}
    calls = [0]

    def loss(params: Sequence[Tensor], values: Sequence[Tensor]) -> Tensor:
        x, y = stream.batch(calls[0])
        calls[0] += 1
        device = values[0].device if values else x.device
        state: dict[str, Tensor] = {n: b.clone() for n, b in model.named_buffers()}
        state.update(dict(model.named_parameters()))
        state.update({names[id(p)]: v for p, v in zip(params, values, strict=True)
                      if id(p) in names})
        out = functional_call(model, state, (x.to(device), None, name))
        return task_loss(task, out, y.to(device))

    return loss


def ablation_rows(alone: float | None, each: Mapping[str, float],
                  together: float) -> dict[str, float]:
    """One seed's ablation: the main task's test metric alone, with each auxiliary, with all."""
    rows = {} if alone is None else {ALONE: alone}
    rows.update({f"main + {a}": v for a, v in each.items()})
    rows[ALL] = together
    return rows


def ablation_blocks(per_seed: Sequence[Mapping[str, float]], metric: str,
                    higher: bool) -> list[Block]:
    """The ablation table over seeds: each setting's main-task metric (mean ± sd), its change
    against the main task alone, and a verdict: with two seeds or more, "hurts" when the mean
    change is below minus its standard deviation ("helps" above it; "within spread" between),
    and the auxiliaries that hurt are flagged; with one seed only the direction is said."""
    settings = list(per_seed[0]) if per_seed else []
    rows, hurts = [], []
    for setting in settings:
        values = [s[setting] for s in per_seed if setting in s]
        base = [s.get(ALONE) for s in per_seed]
        change, verdict, style = "-", "", ""
        if setting != ALONE and all(b is not None for b in base):
            diff = [(v - b) if higher else (b - v) for v, b in zip(values, base, strict=False)]
            change = fmt_values(diff, sign=True)
            mean = statistics.fmean(diff)
            spread = statistics.stdev(diff) if len(diff) > 1 else 0.0
            if len(diff) < 2:  # no spread to judge by: say which way, claim nothing
                verdict = "worse on this seed" if mean < 0 else "better on this seed" \
                    if mean > 0 else "no change"
                style = "bad" if mean < 0 else ""
            elif mean < 0:
                verdict, style = ("hurts" if mean < -spread else "hurts (within spread)"), "bad"
                if setting.startswith("main + ") and setting != ALL:
                    hurts.append(setting.removeprefix("main + "))
            elif mean > spread:
                verdict, style = "helps", "good"
            else:
                verdict = "no clear change"
        rows.append([setting, Cell(fmt_values(values), "strong"), Cell(change, style), verdict])
    blocks: list[Block] = [Table(
        ["setting", f"main task {metric}", "change vs main alone", "verdict"], rows,
        id="ablation", caption=f"Does each auxiliary help? The main task's test {metric} over "
        f"{len(per_seed)} seed(s) (mean ± sd), each setting trained for the same number of "
        "steps and selected on the main task's validation metric.")]
    if hurts:
        blocks.append(Notice(f"**Auxiliary task(s) that hurt the main task: {', '.join(hurts)}**"
                             " — consider dropping them.", "bad"))
    return blocks
