"""Pretrained trunks fine-tuned versus the same networks from scratch, through ``tlroutes.fit``.

What is measured
----------------
Task Fine-Tuning runs (``tlroutes.fit``, the runner's own baseline and summary) on a built-in
pair: source digits 0-4, target digits 5-9 (scikit-learn's 8×8 grey digits, rescaled by the
``imagenet`` stem to S×S RGB, default S=32; each seed draws its own target subset and split).
The library has no built-in image pair at a real resolution yet, so this is the pair used.

- **EfficientNet-Lite0** (``efficientnet_lite0``, ImageNet weights shipped by the ``vision``
  extra): ``source: null`` — ImageNet is the source — fine-tuned on the target (schedule
  ``full``) against the same network re-initialised (``fresh``), same budget.
- **A timm model** (``timm:mobilenetv3_small_050`` by default): timm ships no weights and this
  machine has no network, so it starts from **random weights**; its transfer comes from a source
  stage on digits 0-4 (``source_epochs``), then the target stage, against the same network from
  scratch on the target only.

Both networks have BatchNorm. The caveat measured before (``benchmarks/RESULTS.md``: EfficientNet's
ported TensorFlow momentum 0.01 left eval-mode statistics at ImageNet's — or 0/1 for the
baseline — after ~100 steps) is fixed in the library: ``efficientnet_lite0`` now uses PyTorch's
0.1 (``bn_momentum``). ``--ported-momentum`` adds EfficientNet runs with the old 0.01
(``trunk_args: {bn_momentum: null}``) to compare on the same seeds and data.

Each setting runs ``seeds`` seeds (the runner's mean ± sample std); the figures printed are the
summary's: target test accuracy fine-tuned, from scratch, and the gain.

Usage::

    python benchmarks/pretrained_transfer.py --quick       # smoke run (1 seed, 1 epoch)
    python benchmarks/pretrained_transfer.py               # 3 seeds, S=32 (a few minutes)
    python benchmarks/pretrained_transfer.py --ported-momentum --epochs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import tlroutes


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def one_setting(name: str, args: argparse.Namespace, folder: Path, *, trunk: str,
                trunk_args: dict, source: bool) -> dict:
    """Run one trunk's fine-tuned vs scratch over the seeds; return the summary dict."""
    target = {"dataset": "digits", "task": "digit", "classes": [5, 6, 7, 8, 9], "n": args.n,
              "split": [args.train_share, args.val_share,
                        round(1 - args.train_share - args.val_share, 6)]}
    stage = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    run = {
        "model": {"stem": "imagenet", "stem_args": {"size": args.size}},
        "target_training": stage,
        "source_training": {**stage, "epochs": args.source_epochs},
        "hardware": {"accelerator": "cpu", "threads": args.threads},
    }
    t0 = time.perf_counter()
    result = tlroutes.fit(
        route="task_fine_tuning", target=target,
        source={"dataset": "digits", "task": "digit", "classes": [0, 1, 2, 3, 4]} if source
        else None,
        model=trunk, trunk_args=trunk_args, recipe={"schedule": "full"}, seed=0,
        seeds=args.seeds, out=folder / name, run=run)
    summary = result.summary.to_dict()
    summary["wall"] = time.perf_counter() - t0
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--size", type=int, default=32, help="imagenet stem side (default 32)")
    parser.add_argument("--n", type=int, default=300, help="target digits kept (default 300)")
    parser.add_argument("--train-share", type=float, default=0.4)
    parser.add_argument("--val-share", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=8, help="target epochs (default 8)")
    parser.add_argument("--source-epochs", type=int, default=3,
                        help="the timm model's source-stage epochs (default 3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--timm", default="mobilenetv3_small_050", help="the timm model")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores, as the engine does)")
    parser.add_argument("--ported-momentum", action="store_true",
                        help="also run EfficientNet with the ported BatchNorm momentum 0.01")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the run folders here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 1 epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.source_epochs = 1, 1, 1

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, threads {torch.get_num_threads()}, "
          f"python {sys.version.split()[0]}")
    print(f"target digits 5-9, n={args.n}, split {args.train_share}/{args.val_share}; imagenet "
          f"stem {args.size}x{args.size}; {args.epochs} epochs, batch {args.batch_size}, lr "
          f"{args.lr}; seeds 0..{args.seeds - 1}")
    print(f"timm:{args.timm} has RANDOM weights (timm ships none and there is no network here): "
          f"its transfer is a {args.source_epochs}-epoch source stage on digits 0-4.\n")
    settings = [("efficientnet_lite0", "efficientnet_lite0", {}, False)]
    if args.ported_momentum:
        settings.append(("efficientnet_lite0, ported BN momentum 0.01", "efficientnet_lite0",
                         {"bn_momentum": None}, False))
    settings.append((f"timm:{args.timm} (random init + source stage)", f"timm:{args.timm}", {},
                     True))
    tmp = None
    folder = args.keep
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlroutes-pretrained-")
        folder = Path(tmp.name)
    rows = []
    try:
        for i, (label, trunk, trunk_args, source) in enumerate(settings):
            rows.append((label, one_setting(f"run{i}", args, folder, trunk=trunk,
                                            trunk_args=trunk_args, source=source)))
    finally:
        if tmp is not None:
            tmp.cleanup()

    for label, summary in rows:
        per_seed = summary.get("per_seed", [summary])
        print(f"== {label}  ({summary['wall']:.0f}s)")
        print(f"{'seed':>4} {'fine-tuned':>11} {'scratch':>9} {'gain':>8}")
        for s in per_seed:
            print(f"{s['seed']:>4} {s['metrics']['accuracy']:>11.3f} "
                  f"{s['baseline']['accuracy']:>9.3f} {s['gain']:>+8.3f}")
        tuned = [s["metrics"]["accuracy"] for s in per_seed]
        scratch = [s["baseline"]["accuracy"] for s in per_seed]
        gains = [s["gain"] for s in per_seed]
        print(f"test accuracy fine-tuned {_ms(tuned)}, scratch {_ms(scratch)}, gain "
              f"{_ms(gains)} (positive on {sum(g > 0 for g in gains)}/{len(gains)} seeds)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
