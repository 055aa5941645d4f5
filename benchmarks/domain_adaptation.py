"""Domain Adaptation: target test accuracy of source-only versus each alignment method.

What is measured
----------------
The Domain Adaptation route (``tlroutes.routes.domain_adaptation``) on a built-in domain shift:
the source is scikit-learn's 8×8 ``digits`` (task ``digit``, all ten classes), the target the
same dataset under a shift (default: rotated by 40°; ``--shifts inv`` inverts grey levels), whose
labels are never used for training. For every seed, every selection rule and every method the
route's own ``run(spec, recipe, trainer)`` is called with a run file built here:

* ``source_only`` — the source stage only; its target test accuracy is the baseline;
* ``dann``, ``coral``, ``mmd``, ``cdan``, ``mcc`` — the source stage, then the ``adapt`` stage
  (source task loss + ``trade_off`` × alignment loss on unlabelled target batches); the epoch
  kept is chosen by the recipe's ``selection`` rule, which reads no target label for ``im``
  (default: information maximisation of the target's validation predictions), ``snd`` and
  ``source_accuracy``;
* ``shot`` — the source-free variant (``constraints.source_data: false``, SHOT): its own
  source stage (label smoothing 0.1, so not the shared one), then adaptation on target batches
  only; its gain is against the shared source-only model of the seed, and its own source-only
  accuracy is printed beside it.

**One source stage per seed is shared by every method.** It is trained once (in the
``source_only`` run); every method's run folder then receives a copy of that stage's finished
checkpoint folder and runs with a resumed :class:`~tlroutes.train.engine.Trainer`, which loads
finished stages instead of training them (and reseeds exactly as after training). The script
checks that every method's summary reports the same source-only accuracy as the ``source_only``
run for that seed (``source-only check`` below), i.e. that the reuse changed nothing.

The run seed also seeds the data: each seed has its own subset/split (same seed for source and
target, so the target test images are rotated copies of source *test* images, never of source
training images; the unlabelled target training images are shifted copies of the source training
images). Reported: target test accuracy mean ± sample std over seeds, and the gain over the same
seed's source-only model (mean ± std of the per-seed differences, and on how many seeds it was
positive).

Usage::

    python benchmarks/domain_adaptation.py --quick          # smoke run (1 seed, 2 epochs)
    python benchmarks/domain_adaptation.py                  # 3 seeds, rot40, selection im
    python benchmarks/domain_adaptation.py --seeds 5 --shifts rot40 inv \
        --selections im source_accuracy
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tlroutes.config import parse_run
from tlroutes.objectives.alignment import list_alignments
from tlroutes.routes import domain_adaptation as da
from tlroutes.train.engine import Trainer
from tlroutes.train.hardware import Hardware, make_fabric

SHOT = "shot"
"""The source-free variant (SHOT), run as a method here: ``constraints.source_data: false``."""
PARTIAL = {"pada": "pada", "pmcc": "weighted_mcc"}
"""The partial variant's methods, run as methods here (``variant: partial`` with
``variant_args.method``): ``pada`` (PADA) and ``pmcc`` (class-weighted MCC); with
``--target-classes`` the alignment methods run as ``variant: closed`` (one label set assumed, the
baseline partial adaptation is measured against)."""
METHODS = (*list_alignments(), SHOT, *PARTIAL)
SHIFTS: dict[str, dict[str, float]] = {
    "rot40": {"rotation": 40.0},
    "rot35": {"rotation": 35.0},
    "rot45": {"rotation": 45.0},
    "inv": {"inversion": 1.0},
    "rot40+inv": {"rotation": 40.0, "inversion": 1.0},
}


def make_spec(args: argparse.Namespace, shift: str, method: str, selection: str, seed: int):
    """The run file (as a validated RunSpec) of one method on one shift for one seed."""
    if method == SHOT:
        recipe = {"variant": "source_free", "selection": selection}
    elif method in PARTIAL:
        recipe = {"variant": "partial",
                  "variant_args": {"method": PARTIAL[method], **args.partial_args},
                  "trade_off": args.trade_off, "selection": selection}
    else:
        recipe = {"method": method, "trade_off": args.trade_off, "selection": selection}
        if args.target_classes:
            recipe["variant"] = "closed"
    target = {"dataset": "digits", "task": "digit", "shift": SHIFTS[shift]}
    if args.target_classes:
        target["classes"] = list(args.target_classes)
    return parse_run({
        "route": "domain_adaptation",
        "seed": seed,
        "source": {"dataset": "digits", "task": "digit"},
        "target": target,
        "model": {"trunk": args.trunk},
        "source_training": {"epochs": args.source_epochs, "lr": args.source_lr,
                            "batch_size": args.batch_size},
        "target_training": {"epochs": args.adapt_epochs, "lr": args.adapt_lr,
                            "batch_size": args.batch_size},
        "recipe": recipe,
        "constraints": {"source_data": method != SHOT},
        "hardware": {"accelerator": "cpu", "threads": args.threads},
    }, source="benchmark")


def run_one(spec, folder: Path, fabric, resume: bool) -> dict[str, Any]:
    recipe = da.Recipe.model_validate(spec.recipe)
    trainer = Trainer(folder, seed=spec.seed, resume=resume, progress=False, fabric=fabric)
    return da.run(spec, recipe, trainer)


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--shifts", nargs="+", default=["rot40"], choices=sorted(SHIFTS),
                        help="target shifts (default rot40)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--selections", nargs="+", default=["im"],
                        choices=["im", "snd", "source_accuracy", "last", "target_accuracy"],
                        help="checkpoint selection rules (default im; target_accuracy reads "
                        "target labels and is an oracle, not a valid unsupervised result)")
    parser.add_argument("--target-classes", type=int, nargs="+", default=None,
                        help="a partial-label shift: the target holds only these digits (the "
                        "source all ten); methods pada and pmcc are the partial variant, the "
                        "others run as variant closed. Default: all ten")
    parser.add_argument("--partial-args", type=json.loads, default={},
                        help="variant_args for the partial methods, as JSON (e.g. "
                        "'{\"class_weights\": false}', the ablation). Default: none")
    parser.add_argument("--trunk", default="cnn2d", choices=["cnn2d", "mlp"])
    parser.add_argument("--source-epochs", type=int, default=10)
    parser.add_argument("--source-lr", type=float, default=3e-3)
    parser.add_argument("--adapt-epochs", type=int, default=10)
    parser.add_argument("--adapt-lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--trade-off", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores, as the engine does)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write run folders here (default: a temporary folder, removed)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, 2 source + 2 adapt epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.source_epochs, args.adapt_epochs = 1, 2, 2

    fabric = make_fabric(Hardware(accelerator="cpu", threads=args.threads))
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, threads {torch.get_num_threads()}, "
          f"python {sys.version.split()[0]}")
    print(f"digits -> digits+shift; trunk {args.trunk}; source {args.source_epochs} ep @ "
          f"{args.source_lr}, adapt {args.adapt_epochs} ep @ {args.adapt_lr}, batch "
          f"{args.batch_size}, trade_off {args.trade_off}; seeds 0..{args.seeds - 1}\n")

    tmp = None
    root = args.keep
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlroutes-da-")
        root = Path(tmp.name)
    # results[(shift, selection, method)][seed] = target test accuracy
    acc: dict[tuple[str, str, str], dict[int, float]] = {}
    base: dict[tuple[str, int], float] = {}
    times: dict[str, list[float]] = {}
    mismatches = 0
    t_start = time.perf_counter()
    try:
        for shift in args.shifts:
            for seed in range(args.seeds):
                src_folder = root / shift / f"seed-{seed}" / "source_only"
                t0 = time.perf_counter()
                s = run_one(make_spec(args, shift, "source_only", "im", seed), src_folder,
                            fabric, resume=False)
                times.setdefault("source stage", []).append(time.perf_counter() - t0)
                base[(shift, seed)] = s.metrics["accuracy"]
                print(f"[{shift} seed {seed}] source-only {base[(shift, seed)]:.3f} "
                      f"(source stage {times['source stage'][-1]:.0f}s)", flush=True)
                for selection in args.selections:
                    for method in args.methods:
                        folder = root / shift / f"seed-{seed}" / selection / method
                        # SHOT trains its own source stage (label smoothing 0.1); its gain is
                        # still against the shared source-only model of the same seed.
                        shared = method != SHOT
                        if shared:
                            shutil.copytree(src_folder / "checkpoints" / "source",
                                            folder / "checkpoints" / "source")
                        t0 = time.perf_counter()
                        s = run_one(make_spec(args, shift, method, selection, seed), folder,
                                    fabric, resume=shared)
                        times.setdefault(method, []).append(time.perf_counter() - t0)
                        own = s.baselines["source_only"]["accuracy"]
                        if shared and abs(own - base[(shift, seed)]) > 1e-9:
                            mismatches += 1
                        if not shared:
                            print(f"[{shift} seed {seed}] {method}: its label-smoothed "
                                  f"source-only model {own:.3f}", flush=True)
                        a = s.metrics["accuracy"]
                        acc.setdefault((shift, selection, method), {})[seed] = a
                        print(f"[{shift} seed {seed}] {selection:<15} {method:<6} {a:.3f} "
                              f"(gain {a - base[(shift, seed)]:+.3f}, "
                              f"{times[method][-1]:.0f}s)", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    print()
    header = (f"{'shift':<10} {'selection':<16} {'method':<12} {'target acc':>15} "
              f"{'gain vs source-only':>20} {'gain>0':>7}")
    print(header)
    print("-" * len(header))
    for shift in args.shifts:
        seeds = range(args.seeds)
        b = [base[(shift, s)] for s in seeds]
        print(f"{shift:<10} {'-':<16} {'source_only':<12} {_ms(b):>15} {'-':>20} {'-':>7}")
        for selection in args.selections:
            for method in args.methods:
                a = [acc[(shift, selection, method)][s] for s in seeds]
                g = [x - y for x, y in zip(a, b, strict=True)]
                wins = sum(x > 0 for x in g)
                print(f"{shift:<10} {selection:<16} {method:<12} {_ms(a):>15} {_ms(g):>20} "
                      f"{wins:>4}/{len(g)}")
    print()
    print("mean seconds per run: " + ", ".join(
        f"{k} {statistics.fmean(v):.1f}" for k, v in times.items()))
    print(f"source-only check (every method's run saw the shared source stage's accuracy): "
          f"{'ok' if mismatches == 0 else f'{mismatches} MISMATCHES'}")
    print(f"total {time.perf_counter() - t_start:.0f}s")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
