"""The domain verdict on iid data at small n and high dimension: the share of "different".

What is measured: :func:`tlroutes.measure.evidence.inspect` at its defaults (200 permutations,
up to 5 measurement seeds, majority rule) on two independent draws of ONE Gaussian
``N(0, I_d)``, ``n`` samples per side (tabular, regression task, so the inputs are compared
directly). Each cell runs ``--trials`` seeded trials (trial ``t`` draws with seed
``20_000 + t`` and measures with seed ``t``); the table gives the share of each verdict. Both
draws come from one distribution, so a "different" is a false positive: a calibrated verdict
says it on at most ``alpha`` = 5% of the trials.

Usage::

    python benchmarks/domain_null_grid.py                       # n 20/30/50/100, d 5/20/50
    python benchmarks/domain_null_grid.py --trials 30 --n 30 --d 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tlroutes.measure.evidence import inspect
from tlroutes.problem import Domain, Problem, Split, Task


def gaussian_problem(x: np.ndarray, name: str) -> Problem:
    """Tabular regression problem holding ``x`` (all but 2 rows train, 2 val; inspect pools
    them); the targets are zeros and play no part in the domain test."""
    t = torch.from_numpy(x)
    y = torch.zeros(len(x), 1)
    domain = Domain("gauss", "tabular", (x.shape[1],))
    return Problem(name, Task("regression"), domain, Split(t[:-2], y[:-2]),
                   Split(t[-2:], y[-2:]), Split(t[-2:], y[-2:]))


def null_counts(n: int, d: int, trials: int, first: int = 0) -> dict[str, int]:
    """Verdict counts over ``trials`` iid trials of ``N(0, I_d)``, ``n`` per side."""
    counts = {"same": 0, "different": 0, "undecided": 0}
    for trial in range(first, first + trials):
        rng = np.random.default_rng(20_000 + trial)
        a = gaussian_problem(rng.normal(size=(n, d)), "a")
        b = gaussian_problem(rng.normal(size=(n, d)), "b")
        verdict = inspect(a, b, seed=trial).pairs[0].domain.verdict
        counts[verdict] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--n", type=int, nargs="+", default=[20, 30, 50, 100])
    parser.add_argument("--d", type=int, nargs="+", default=[5, 20, 50])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| n per side | d | different | same | undecided | s |  ({args.trials} trials)")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        for d in args.d:
            start = time.perf_counter()
            c = null_counts(n, d, args.trials)
            share = {k: f"{v / args.trials:.0%}" for k, v in c.items()}
            print(f"| {n} | {d} | {share['different']} | {share['same']} | "
                  f"{share['undecided']} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
