"""Multi-task weighting cost: a training step with each weighting ÷ one with the summed loss.

What is measured
----------------
A small shared MLP trunk (``64 → width → width → width``, ReLU) and K linear heads (``width → 10``,
cross-entropy on random labels), batch 128, AdamW, K = 2, 4 and 8 tasks. One *step* is what a
training loop does per batch: forward through trunk and heads, ``zero_grad``, the backward, and
``AdamW.step()`` (plus the tiny optimiser of the weighting's own parameters for UW and GradNorm).

* **baseline** — ``sum(losses).backward()``;
* **each weighting** — ``weighting.backward(losses, trunk.parameters(), ...)`` with its defaults
  (``task_params`` not given, so the graph walk that finds the heads is included), and the
  variants that read the shared features ``Z``: MGDA-UB (``mgda`` given ``shared_features``),
  ``on="features"`` for PCGrad, CAGrad and Nash-MTL, and exact MGDA (``upper_bound=False``).

Each variant is timed in blocks of ``--steps`` steps, each block paired with a baseline block
right before or after it (the order alternates), after an untimed warm-up. The figure is the
median over ``--repeats`` of the per-pair ratio ``variant time / baseline time`` (with min and
max). Only ratios are meant to be read: the machine may be shared.

Usage::

    python benchmarks/mtl_weighting.py                       # default: 7 repeats x 10 steps
    python benchmarks/mtl_weighting.py --quick               # smoke run (seconds)
    python benchmarks/mtl_weighting.py --threads 1 --repeats 11 --tasks 4
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tlroutes.objectives.mtl import WEIGHTINGS, GradientWeighting, create_weighting

# (label, factory name, constructor kwargs, pass shared_features)
VARIANTS: list[tuple[str, str, dict, bool]] = [
    ("ew", "ew", {}, False),
    ("uw", "uw", {}, False),
    ("dwa", "dwa", {}, False),
    ("rlw", "rlw", {}, False),
    ("gradnorm", "gradnorm", {}, False),
    ("pcgrad", "pcgrad", {}, False),
    ("mgda (exact)", "mgda", {"upper_bound": False}, False),
    ("cagrad", "cagrad", {}, False),
    ("nash_mtl", "nash_mtl", {}, False),
    ("mgda-ub (Z)", "mgda", {}, True),
    ("pcgrad on=features", "pcgrad", {"on": "features"}, True),
    ("cagrad on=features", "cagrad", {"on": "features"}, True),
    ("nash_mtl on=features", "nash_mtl", {"on": "features"}, True),
]


class Net(nn.Module):
    def __init__(self, num_tasks: int, width: int, d_in: int = 64, classes: int = 10):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Linear(width, classes) for _ in range(num_tasks))


def make_steps(num_tasks: int, width: int, batch: int, seed: int = 0):
    """The baseline step and a step factory for a weighting, on one model and one batch."""
    torch.manual_seed(seed)
    net = Net(num_tasks, width)
    x = torch.randn(batch, 64)
    ys = [torch.randint(0, 10, (batch,)) for _ in range(num_tasks)]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def forward():
        feats = net.trunk(x)
        return [F.cross_entropy(h(feats), y) for h, y in zip(net.heads, ys, strict=True)], feats

    def baseline() -> None:
        losses, _ = forward()
        opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        opt.step()

    def weighted(name: str, kwargs: dict, features: bool) -> Callable[[], None]:
        weighting = create_weighting(name, num_tasks=num_tasks, **kwargs)
        own = list(weighting.parameters())
        wopt = torch.optim.AdamW(own, lr=1e-3) if own else None

        def step() -> None:
            losses, feats = forward()
            opt.zero_grad(set_to_none=True)
            if wopt is not None:
                wopt.zero_grad(set_to_none=True)
            weighting.backward(losses, net.trunk.parameters(),
                               shared_features=feats if features else None)
            opt.step()
            if wopt is not None:
                wopt.step()

        return step

    return baseline, weighted


def timed(step: Callable[[], None], steps: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def measure(num_tasks: int, width: int, batch: int, steps: int, repeats: int,
            variants=VARIANTS) -> tuple[dict[str, list[float]], list[float]]:
    baseline, weighted = make_steps(num_tasks, width, batch)
    fns = {label: weighted(name, kw, feats) for label, name, kw, feats in variants}
    for _ in range(2):  # warm-up: allocator, lazy init, first solver calls
        baseline()
        for fn in fns.values():
            fn()
    ratios: dict[str, list[float]] = {label: [] for label in fns}
    base_times: list[float] = []
    for r in range(repeats):
        for i, (label, fn) in enumerate(fns.items()):
            if (r + i) % 2 == 0:
                b, v = timed(baseline, steps), timed(fn, steps)
            else:
                v, b = timed(fn, steps), timed(baseline, steps)
            ratios[label].append(v / b)
            base_times.append(b)
    return ratios, base_times


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 8], help="values of K")
    parser.add_argument("--repeats", type=int, default=7, help="paired blocks per variant")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--width", type=int, default=256, help="trunk width")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (the engine's default here: cores // processes = 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats x 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps = 2, 2
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"# trunk 64-{args.width}-{args.width}-{args.width}, heads {args.width}->10, batch "
          f"{args.batch}, {args.repeats} repeats x {args.steps} steps\n")
    results = {}
    base_ms = {}
    for K in args.tasks:
        t0 = time.perf_counter()
        results[K], base = measure(K, args.width, args.batch, args.steps, args.repeats)
        base_ms[K] = statistics.median(base) * 1e3
        print(f"# K={K}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    header = "| weighting | " + " | ".join(f"K = {K}" for K in args.tasks) + " |"
    print(header)
    print("|---|" + "---:|" * len(args.tasks))
    print("| *baseline step (ms, median)* | "
          + " | ".join(f"{base_ms[K]:.1f}" for K in args.tasks) + " |")
    for label, *_ in VARIANTS:
        print(f"| {label} | " + " | ".join(_fmt(results[K][label]) for K in args.tasks) + " |")
    if 4 in results:
        print("\nTarget: <= 2x at K = 4 for the gradient-manipulating methods:")
        for label, name, _, _ in VARIANTS:
            if issubclass(WEIGHTINGS.get(name), GradientWeighting):  # gradient-manipulating
                med = statistics.median(results[4][label])
                print(f"  {label:22s} {med:5.2f}x  {'met' if med <= 2.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
