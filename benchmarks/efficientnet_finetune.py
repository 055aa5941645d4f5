"""Fine-tuning pretrained EfficientNet-Lite0 versus the same network from scratch, on few digits.

What is measured
----------------
The Task Fine-Tuning route (``tlroutes.routes.task_fine_tuning``) run by ``tlroutes.run`` from a
run file built here, with ``source: null`` — no source stage: the ImageNet-pretrained
EfficientNet-Lite0 trunk (weights shipped by the ``vision`` extra) *is* the source — and
``model: {trunk: efficientnet_lite0, stem: imagenet, stem_args: {size: S}}`` (8×8 grey digits
rescaled to S×S, repeated to RGB, ImageNet-normalised). The target is a small subset of
scikit-learn's ``digits`` (task ``digit``, ten classes; by default 500 digits split 40/20/40:
200 train, 100 validation, 200 test; each seed draws its own subset and split).

For each seed the route fine-tunes everything (schedule ``full``: new ``Linear(1280, 10)`` head,
AdamW, cosine schedule, the epoch with the best validation accuracy kept) and trains the
**baseline**: the same architecture built with ``fresh=True`` (every layer of the pretrained trunk
re-initialised) with the same budget on the same data. The run file's ``seeds: k`` makes the
runner repeat the whole run for seeds 0..k-1 and report mean ± sample std of the fine-tuned test
accuracy, the baseline's and the gain (their per-seed difference) in ``summary.json``; those are
the figures printed.

Diagnostic (``--no-bn-diagnostic`` skips it; outside the route, read it as such): the
EfficientNet-Lite weights come from TensorFlow with BatchNorm momentum 0.01 (TF's 0.99), so after a
few hundred fine-tuning steps the running statistics used in eval mode still lean on where they
started (ImageNet's for the pretrained trunk, 0/1 for the fresh one), while training normalised
with batch statistics. After the run the script reloads each seed's two selected models
(``model.safetensors``, ``checkpoints/baseline/final.safetensors``), re-estimates every
BatchNorm's running statistics on that seed's *training* split (cumulative average, no gradient,
the rest of the network in eval mode) and reports the test accuracy again. The gap between the
two readings is how much of the result the stale statistics account for.

Before training, the script checks what the route's baseline starts from: it builds the run
file's model as the route does, pretrained (``fresh=False``) and from scratch (``fresh=True``),
and counts the trunk parameter tensors that are equal in both (expected: none).

CPU cost: EfficientNet-Lite0 is ~4 M parameters; at S=32 one training step on a batch of 16 takes
about 0.45 s on one core, so the defaults (200 training samples, batch 16, 10 epochs = 130 steps
per model, 3 seeds, fine-tuned + baseline) take about 15 minutes. On a shared, oversubscribed
machine pass ``--threads 1``: with two OpenMP threads competing for busy cores a step was seen to
take 2-8 s instead.

Usage::

    python benchmarks/efficientnet_finetune.py --quick            # smoke run (1 seed, 2 epochs)
    python benchmarks/efficientnet_finetune.py                    # 3 seeds, S=32, 10 epochs
    python benchmarks/efficientnet_finetune.py --seeds 5 --size 64 --n 400 --epochs 15
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

from tlroutes.config import parse_run
from tlroutes.data import load_builtin
from tlroutes.runner import run
from tlroutes.train.from_spec import build


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def make_spec(args: argparse.Namespace):
    return parse_run({
        "route": "task_fine_tuning",
        "seed": 0,
        "seeds": args.seeds,
        "source": None,
        "target": {"dataset": "digits", "task": "digit", "n": args.n,
                   "split": [args.train_share, args.val_share,
                             round(1 - args.train_share - args.val_share, 6)]},
        "model": {"trunk": "efficientnet_lite0", "stem": "imagenet",
                  "stem_args": {"size": args.size}},
        "target_training": {"epochs": args.epochs, "batch_size": args.batch_size,
                            "lr": args.lr},
        "baseline": True,
        "recipe": {"schedule": "full"},
        "hardware": {"accelerator": "cpu", "threads": args.threads},
    }, source="benchmark")


def check_fresh(spec) -> tuple[int, int]:
    """(trunk tensors equal in the pretrained and the fresh build, trunk tensors in all)."""
    problem = load_builtin("digits", task="digit", n=spec.target.n)
    torch.manual_seed(0)
    pre = build(spec.model, {"input": problem.domain}, {"target": problem.task})
    torch.manual_seed(0)
    fresh = build(spec.model, {"input": problem.domain}, {"target": problem.task}, fresh=True)
    a, b = pre.trunk.state_dict(), fresh.trunk.state_dict()
    floats = [k for k in a if a[k].is_floating_point()]
    same = [k for k in floats if torch.equal(a[k], b[k])]
    return len(same), len(floats)


def _accuracy(model, split) -> float:
    model.eval()
    with torch.no_grad():
        return (model(split.x, head="target").argmax(1) == split.y).float().mean().item()


def _recalibrate_bn(model, x, batch: int = 50) -> None:
    """Re-estimate BatchNorm running statistics on ``x`` (cumulative average, no gradient)."""
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i : i + batch], head="target")
    model.eval()


def bn_diagnostic(spec, folder: Path, seeds: list[int]) -> dict[int, dict[str, float]]:
    """Per seed: test accuracy of both selected models as saved and after BN re-estimation."""
    from safetensors.torch import load_file

    from tlroutes.train.from_spec import load

    out: dict[int, dict[str, float]] = {}
    for seed in seeds:
        run_dir = folder if len(seeds) == 1 else folder / f"seed-{seed}"
        target = load(spec.target, seed, "target")
        row: dict[str, float] = {}
        for name, path, prefix in (
            ("fine-tuned", run_dir / "model.safetensors", ""),
            ("scratch", run_dir / "checkpoints" / "baseline" / "final.safetensors", "model."),
        ):
            model = build(spec.model, {"input": target.domain}, {"target": target.task})
            saved = load_file(str(path))
            model.load_state_dict({k[len(prefix):]: v for k, v in saved.items()
                                   if k.startswith(prefix)})
            row[name] = _accuracy(model, target.test)
            _recalibrate_bn(model, target.train.x)
            row[f"{name} recal"] = _accuracy(model, target.test)
        out[seed] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--size", type=int, default=32, help="imagenet stem side (default 32)")
    parser.add_argument("--n", type=int, default=500, help="digits kept (default 500)")
    parser.add_argument("--train-share", type=float, default=0.4)
    parser.add_argument("--val-share", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores, as the engine does)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the run folder here (default: a temporary folder)")
    parser.add_argument("--no-bn-diagnostic", dest="bn_diagnostic", action="store_false",
                        help="skip the BatchNorm re-estimation diagnostic")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, 2 epochs, n=200")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.n = 1, 2, 200

    spec = make_spec(args)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, threads {torch.get_num_threads()}, "
          f"python {sys.version.split()[0]}")
    sizes = load_builtin("digits", n=args.n, split=tuple(spec.target.split)).meta["sizes"]
    print(f"target digits/digit n={args.n} split {sizes}; efficientnet_lite0 + imagenet stem "
          f"{args.size}x{args.size}; {args.epochs} epochs, batch {args.batch_size}, lr "
          f"{args.lr}; seeds 0..{args.seeds - 1}")
    same, total = check_fresh(spec)
    print(f"baseline check: {same} of {total} trunk tensors equal in the pretrained and the "
          f"fresh=True build ({'ok: re-initialised' if same == 0 else 'NOT re-initialised'})\n")

    t0 = time.perf_counter()
    tmp = None
    folder = args.keep
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlroutes-effnet-")
        folder = Path(tmp.name) / "run"
    try:
        summary = run(spec, folder, progress=False).to_dict()  # the summary.json form
        wall = time.perf_counter() - t0
        seeds = list(range(spec.seed, spec.seed + spec.seeds))
        diag = bn_diagnostic(spec, folder, seeds) if args.bn_diagnostic else None
    finally:
        if tmp is not None:
            tmp.cleanup()

    per_seed = summary.get("per_seed", [summary])
    header = f"{'seed':>4} {'fine-tuned':>11} {'scratch':>9} {'gain':>8}"
    print(header)
    print("-" * len(header))
    for s in per_seed:
        print(f"{s['seed']:>4} {s['metrics']['accuracy']:>11.3f} "
              f"{s['baseline']['accuracy']:>9.3f} {s['gain']:>+8.3f}")
    std = summary.get("metrics_std") or {"accuracy": 0.0}
    bstd = summary.get("baseline_std") or {"accuracy": 0.0}
    gstd = summary.get("gain_std") or 0.0
    print()
    print(f"test accuracy, fine-tuned pretrained: {summary['metrics']['accuracy']:.3f} ± "
          f"{std['accuracy']:.3f}")
    print(f"test accuracy, from scratch:          {summary['baseline']['accuracy']:.3f} ± "
          f"{bstd['accuracy']:.3f}")
    wins = sum(s["gain"] > 0 for s in per_seed)
    print(f"gain (fine-tuned - scratch):          {summary['gain']:+.3f} ± {gstd:.3f} "
          f"(positive on {wins}/{len(per_seed)} seeds; mean ± sample std over seeds)")
    print(f"wall time {wall:.0f}s ({wall / len(per_seed):.0f}s per seed, both models)")
    if diag is not None:
        print("\ndiagnostic: test accuracy as selected by the route vs after re-estimating "
              "BatchNorm statistics on the train split")
        header = (f"{'seed':>4} {'fine-tuned':>11} {'recal':>7} {'scratch':>9} {'recal':>7} "
                  f"{'gain':>8} {'recal':>7}")
        print(header)
        print("-" * len(header))
        for seed, r in diag.items():
            print(f"{seed:>4} {r['fine-tuned']:>11.3f} {r['fine-tuned recal']:>7.3f} "
                  f"{r['scratch']:>9.3f} {r['scratch recal']:>7.3f} "
                  f"{r['fine-tuned'] - r['scratch']:>+8.3f} "
                  f"{r['fine-tuned recal'] - r['scratch recal']:>+7.3f}")
        for key in ("fine-tuned", "scratch"):
            print(f"{key + ' after BN re-estimation:':<38}"
                  f"{_ms([r[key + ' recal'] for r in diag.values()])}")
        print(f"{'gain after BN re-estimation:':<38}"
              f"{_ms([r['fine-tuned recal'] - r['scratch recal'] for r in diag.values()])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
