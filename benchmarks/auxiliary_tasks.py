"""Auxiliary tasks serving a main task with few labels: the example, its variants and a control.

What is measured
----------------
``examples/multi_task_learning_auxiliary.yaml`` (MNIST-1D, cnn1d trunk): the main task ``digit``
with 100 training labels (n 2000, split 5 / 47.5 / 47.5 %: 950 validation and 950 test signals),
auxiliaries ``properties`` (even, >4, prime, loop) and ``gt4`` on 2,400 other training signals
of the same generator, 12 epochs (a pass over the longest stream: 38 steps), batch 64 from each
stream, lr 0.002. Each setting runs seeds 0, 1, 2 (the runner's ``seeds: 3``) and prints the
main task's test accuracy joint and alone (the same-steps baseline the run trains itself), the
gain, each as mean ± sample std, and the ablation rows when the setting has them.

Settings (``--setting``, repeatable; default all):

- ``example``: the run file as shipped (``ew``) with ``ablation: true`` (main + each auxiliary;
  the ablation's stages train after the joint and baseline stages, on seeds of their own, so
  they leave those figures as the run file alone gives them);
- ``gradsim``, ``auto_lambda``: the same with that auxiliary weighting (no ablation);
- ``shuffled``: a control — the auxiliaries' training labels permuted among their inputs (one
  permutation for both, so they still share inputs): the same inputs and steps, labels that say
  nothing about the signal. A gain that survives it would come from the extra inputs, not from
  the auxiliary labels;
- ``same_inputs``: the main task's 100 labels on 100 of the auxiliaries' own 2,400 training
  signals (10 per digit, drawn per seed), the papers' "same inputs, main labels scarce": every
  problem is the ``n: 4000`` draw split 60/20/20, the main task's validation and test splits are
  the auxiliaries' (800 signals each), ``ew``. A run file cannot yet keep only some of a
  problem's training labels, so this setting builds the problems here;
- ``i100``, ``i300``: the settings measured before the one-stream-per-input fix (engineer I):
  main ``n: 1000`` with 100 (``split: [0.1, 0.45, 0.45]``, 6 epochs) or 300 (``[0.3, 0.35,
  0.35]``, 10 epochs) training labels, ``gt4`` on its own draw (``seed: 100``), ``ew``.

Usage::

    python benchmarks/auxiliary_tasks.py                      # every setting (~15 min, 2 cores)
    python benchmarks/auxiliary_tasks.py --setting shuffled   # one setting
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from tlroutes.config import HardwareSpec, load_run_file
from tlroutes.data.variants import class_targets, make_task, property_targets
from tlroutes.routes import multi_task_learning
from tlroutes.runner import run

EXAMPLE = Path(str(resources.files("tlroutes") / "examples" / "multi_task_learning_auxiliary.yaml"))


def _spec(setting: str):
    # one thread: the figures in benchmarks/RESULTS.md were measured so (another count sums
    # floats in another order and moves them in the last digits)
    spec = load_run_file(EXAMPLE).model_copy(update={
        "seeds": 3, "hardware": HardwareSpec(accelerator="cpu", threads=1)})
    recipe: dict[str, Any] = dict(spec.recipe)
    update: dict[str, Any] = {}
    if setting in ("gradsim", "auto_lambda"):
        recipe = {"weighting": setting}
    elif setting in ("shuffled", "same_inputs"):
        recipe = {"weighting": "ew"}
    elif setting in ("i100", "i300"):
        recipe = {"weighting": "ew"}
        split, epochs = ((0.1, 0.45, 0.45), 6) if setting == "i100" else ((0.3, 0.35, 0.35), 10)
        problems = dict(spec.problems)
        problems["digit"] = problems["digit"].model_copy(update={"n": 1000, "split": split})
        problems["gt4"] = problems["gt4"].model_copy(update={"seed": 100})
        update["problems"] = problems
        update["training"] = spec.training.model_copy(update={"epochs": epochs})
    elif setting == "example":
        recipe["ablation"] = True
    else:
        raise SystemExit(f"unknown setting '{setting}'; choose from {', '.join(SETTINGS)}")
    return spec.model_copy(update={"recipe": recipe, **update})


SETTINGS = ("example", "gradsim", "auto_lambda", "shuffled", "same_inputs", "i100", "i300")

MAIN_LABELS_PER_DIGIT = 10
"""``same_inputs``: training labels the main task keeps per digit (10 digits: 100 labels)."""


def _shuffled_auxiliary_loader(load, main: str):
    """``load`` with each auxiliary's training labels permuted (one permutation per seed)."""
    def shuffled(spec, seed, role):
        problem = load(spec, seed, role)
        if role != main:
            order = torch.randperm(len(problem.train),
                                   generator=torch.Generator().manual_seed(seed))
            problem.train = dataclasses.replace(problem.train, y=problem.train.y[order])
        return problem
    return shuffled


def _same_inputs_loader(load, main: str):
    """``load`` giving every problem the auxiliaries' draw (their ``n``, split 60/20/20): the
    auxiliaries label all of it, the main task ``MAIN_LABELS_PER_DIGIT`` training signals per
    digit (its validation and test splits are the auxiliaries')."""
    def same(spec, seed, role):
        digits = load(spec.model_copy(update={"task": "digit", "n": 4000,
                                              "split": (0.6, 0.2, 0.2)}), seed, role)
        if role == main:
            g = torch.Generator().manual_seed(seed)
            keep = torch.cat([
                (digits.train.y == d).nonzero().flatten()[
                    torch.randperm(int((digits.train.y == d).sum()), generator=g)[
                        :MAIN_LABELS_PER_DIGIT]] for d in range(10)])
            return dataclasses.replace(digits, train=digits.train.subset(keep.sort().values))
        variant = spec.task
        task = make_task(variant, tuple(range(10)), "signal")

        def relabel(split):
            y = (property_targets(split.y) if variant == "properties"
                 else class_targets(variant, split.y, tuple(range(10))))
            return dataclasses.replace(split, y=y)
        name = f"{digits.name.rsplit('/', 1)[0]}/{variant}"
        return dataclasses.replace(digits, name=name, task=task, train=relabel(digits.train),
                                   val=relabel(digits.val), test=relabel(digits.test))
    return same


def _fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def measure(setting: str, out: Path) -> None:
    spec = _spec(setting)
    load = multi_task_learning.load
    if setting == "shuffled":
        multi_task_learning.load = _shuffled_auxiliary_loader(load, spec.main_task)
    elif setting == "same_inputs":
        multi_task_learning.load = _same_inputs_loader(load, spec.main_task)
    try:
        summary = run(spec, out / setting, progress=False)
    finally:
        multi_task_learning.load = load
    seeds = summary.per_seed or [summary]
    joint = [s.metrics["accuracy"] for s in seeds]
    alone = [s.baseline["accuracy"] for s in seeds]
    print(f"{setting}: joint {_fmt(joint)}  alone (same steps) {_fmt(alone)}  gain "
          f"{_fmt([a - b for a, b in zip(joint, alone, strict=True)])}  per seed "
          f"{[round(a, 3) for a in joint]} vs {[round(b, 3) for b in alone]}", flush=True)
    rows = [s.details["ablation"] for s in seeds if s.details.get("ablation")]
    for row in rows[0] if rows else []:
        print(f"  {row}: {_fmt([r[row] for r in rows])}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", action="append", choices=SETTINGS)
    parser.add_argument("--out", type=Path, default=None, help="run folders (default: temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.setting or SETTINGS:
            measure(setting, args.out or Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
