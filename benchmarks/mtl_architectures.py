"""Multi-task architecture cost: a training step with each architecture ÷ one with hard sharing.

What is measured
----------------
The models the Multi-Task Learning route builds (``build_model(..., sharing=...)``) for K tasks
on 8×8 grey images (the built-in digits' shape): the auto image stem, the ``cnn2d`` trunk
(``--channels``, default 32 64), one linear 10-way head per task; batch ``--batch`` of random
images and labels. One *step* is what the route does per batch with the equal weighting:
``model.task_features`` → every head → the K cross-entropies → ``zero_grad`` → one backward of
the summed loss → ``AdamW.step()``.

* **hard** — the plain model (one trunk; the route's default);
* **mmoe E=2 / E=4** — that many expert trunks, one gate per task;
* **ple** — its defaults (2 shared experts, 1 per task, 1 level = CGC) and 2 levels;
* **mtan** — one trunk, per-task attention masks at each stage;
* **cross_stitch** — one trunk per task, stitched after each stage.

Each architecture is timed in blocks of ``--steps`` steps, each block paired with a hard-sharing
block right before or after it (the order alternates), after an untimed warm-up. The figure is
the median over ``--repeats`` of the per-pair ratio ``architecture time / hard time`` (with min
and max); parameter counts are printed beside it. Only ratios are meant to be read: the machine
may be shared.

Usage::

    python benchmarks/mtl_architectures.py                      # default: 7 repeats x 5 steps
    python benchmarks/mtl_architectures.py --quick              # smoke run (seconds)
    python benchmarks/mtl_architectures.py --threads 1 --tasks 2 4 --batch 64
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

from tlroutes.model import build_model, count_parameters
from tlroutes.problem import Domain, Task

# (label, architecture, its arguments)
VARIANTS: list[tuple[str, str, dict]] = [
    ("mmoe E=2", "mmoe", {"experts": 2}),
    ("mmoe E=4", "mmoe", {"experts": 4}),
    ("ple (2 shared, 1 per task)", "ple", {}),
    ("ple, 2 levels", "ple", {"levels": 2}),
    ("mtan", "mtan", {}),
    ("cross_stitch", "cross_stitch", {}),
]


def make_step(num_tasks: int, channels: list[int], batch: int, sharing: str = "hard",
              args: dict | None = None, seed: int = 0) -> tuple[Callable[[], None], int]:
    """One training step of the architecture on one fixed batch, and its parameter count."""
    torch.manual_seed(seed)
    domain = Domain("digits", "image", (1, 8, 8))
    tasks = {f"t{k}": Task("classification", tuple("0123456789"), f"t{k}")
             for k in range(num_tasks)}
    model = build_model(domain, tasks, "cnn2d", {"channels": channels}, sharing=sharing,
                        sharing_args=args)
    x = torch.randn(batch, 1, 8, 8)
    ys = {name: torch.randint(0, 10, (batch,)) for name in tasks}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        feats = model.task_features(x).per_task
        loss = sum(F.cross_entropy(model.heads[n](feats[n]), y) for n, y in ys.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, count_parameters(model)


def timed(step: Callable[[], None], steps: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def measure(num_tasks: int, channels: list[int], batch: int, steps: int, repeats: int):
    """Per-variant ratios to hard sharing, hard's step times, and parameter counts."""
    hard, hard_params = make_step(num_tasks, channels, batch)
    fns, params = {}, {"hard": hard_params}
    for label, name, args in VARIANTS:
        fns[label], params[label] = make_step(num_tasks, channels, batch, name, args)
    for _ in range(2):  # warm-up: allocator, lazy init
        hard()
        for fn in fns.values():
            fn()
    ratios: dict[str, list[float]] = {label: [] for label in fns}
    base: list[float] = []
    for r in range(repeats):
        for i, (label, fn) in enumerate(fns.items()):
            if (r + i) % 2 == 0:
                b, v = timed(hard, steps), timed(fn, steps)
            else:
                v, b = timed(fn, steps), timed(hard, steps)
            ratios[label].append(v / b)
            base.append(b)
    return ratios, base, params


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4], help="values of K")
    parser.add_argument("--repeats", type=int, default=7, help="paired blocks per variant")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64],
                        help="cnn2d stage widths")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats x 1 step")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps = 2, 1
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"# cnn2d channels {args.channels} on 1x8x8 images, linear 10-way heads, batch "
          f"{args.batch}, equal weighting, {args.repeats} repeats x {args.steps} steps\n")
    results, base_ms, params = {}, {}, {}
    for K in args.tasks:
        t0 = time.perf_counter()
        results[K], base, params[K] = measure(K, args.channels, args.batch, args.steps,
                                              args.repeats)
        base_ms[K] = statistics.median(base) * 1e3
        print(f"# K={K}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print("| architecture | " + " | ".join(
        f"K = {K}: step ÷ hard | K = {K}: parameters" for K in args.tasks) + " |")
    print("|---|" + "---:|---:|" * len(args.tasks))
    print("| *hard: step ms (median), parameters* | " + " | ".join(
        f"{base_ms[K]:.1f} ms | {params[K]['hard']:,}" for K in args.tasks) + " |")
    for label, *_ in VARIANTS:
        print(f"| {label} | " + " | ".join(
            f"{_fmt(results[K][label])} | {params[K][label]:,}" for K in args.tasks) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
