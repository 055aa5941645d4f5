"""`tlroutes inspect` on 2 × 2,000 samples: wall time against the issue's one-minute budget.

What is measured: :func:`tlroutes.measure.evidence.inspect` at its defaults (MMD with 200
permutations, C2ST with 5 folds and 200 permutations, a null and a positive control, repeated
over up to 5 measurement seeds until a verdict has the majority — 3 seeds for a clear case —
and the task comparison) on two built-in problems of 2,000 samples per side (train +
validation pooled, as the domain tests use them): MNIST-1D signals against the same
generator with noise; and, for images, every 8×8 digit against a rotated copy (the digits set
has 1,797 samples, so that case has 1,437 per side). Data loading is timed apart. Each case
runs ``--repeats`` times; the median is reported with its ratio to the 60 s budget (below 1
meets it). Run with the thread count the command ships with (``--threads``, default 2 = this
machine's cores).

Usage::

    python benchmarks/inspect_speed.py                 # both cases, 3 repeats
    python benchmarks/inspect_speed.py --repeats 1 --threads 1
    python benchmarks/inspect_speed.py --seeds 1      # one measurement seed per verdict
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tlroutes.config import DataSpec
from tlroutes.data.load import load_problem
from tlroutes.measure.evidence import inspect

BUDGET_S = 60.0

CASES = {
    "signals (1×40)": ({"dataset": "mnist1d", "n": 2500},
                       {"dataset": "mnist1d", "n": 2500, "shift": {"noise": 0.6}, "seed": 1}),
    "images (1×8×8)": ({"dataset": "digits"},
                       {"dataset": "digits", "shift": {"rotation": 20}, "seed": 1}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=None,
                        help="measurement seeds per verdict (default: inspect's, 5)")
    args = parser.parse_args()
    extra = {} if args.seeds is None else {"seeds": args.seeds}
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, repeats {args.repeats}, budget {BUDGET_S:.0f} s")
    print(f"{'case':<16} {'per side':>9} {'load s':>7} {'inspect s':>10} {'÷ budget':>9}  verdict")
    for name, (a, b) in CASES.items():
        t0 = time.perf_counter()
        first = load_problem(DataSpec.model_validate(a), 0, "first")
        second = load_problem(DataSpec.model_validate(b), 1, "second")
        load = time.perf_counter() - t0
        times, verdict, used = [], "", 0
        for repeat in range(args.repeats):
            t0 = time.perf_counter()
            evidence = inspect(first, second, seed=repeat, **extra)
            times.append(time.perf_counter() - t0)
            pair = evidence.pairs[0]
            verdict = pair.domain.verdict
            used = min(v for k, v in pair.domain.n.items() if k.endswith("_used"))
        median = statistics.median(times)
        runs = evidence.pairs[0].domain.stability
        verdict += f" ({len(runs.verdicts)} seeds)" if runs is not None else ""
        print(f"{name:<16} {used:>9} {load:>7.1f} {median:>10.1f} {median / BUDGET_S:>9.2f}  "
              f"{verdict}  (runs: {', '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    main()
