"""Parallel Training: fused steps against a Python loop, and ``auto`` against the plain loop.

What is measured
----------------

1. **Fused step vs loop** (target: ≥ 5× for small models). ``jobs`` same-architecture MLPs
   (built-in ``mlp`` trunk of ``width``, digits 8×8, 10 classes, batch 32, AdamW as the engine
   builds it), each with its own initialisation, trained two ways side by side in one process:

   * **loop** — for every model in turn: forward, cross-entropy, ``zero_grad``, backward,
     ``AdamW.step()`` (one optimizer per model);
   * **fused** — one :class:`tlroutes.train.parallel.FusedStep` over the stacked models
     (``vmap`` of ``functional_call``) and one AdamW over the stacked parameters.

   Each repeat times ``steps`` steps of each way, the two ways alternating (which goes first
   alternates too, after one untimed warm-up of each); the figure is the median over repeats of
   (loop time per step ÷ fused time per step), with min and max. Several widths show where the
   gain fades: fusing saves per-operation overhead, which large layers no longer have.

2. **Whole runs, small models**: :func:`tlroutes.train.parallel.run_jobs` of the same ``jobs``
   small jobs (digits, a few epochs) with ``backend="sequential"`` (the plain loop through the
   engine) and ``backend="fused"``: wall time of each, end to end (data, validation every epoch,
   checkpoints).

3. **auto on large models** (target: never slower than the loop). 4 jobs of a large MLP
   (``--large-width``, depth 3) on all of digits, each with another shift — jobs that could fuse,
   but are large: ``run_jobs`` with ``backend="sequential"``
   against ``backend="auto"`` (whose wall time includes its checks: data loading, one timed step
   per job and one timed fused step), alternating, ``--large-repeats`` times; reports each
   wall time, the ratio, and what ``auto`` chose and why (after one untimed warm-up run).

Threads: ``--threads`` (default: all cores, as ``tlroutes run`` uses) for parts 2 and 3, and
``--step-threads`` (default 1) for part 1.

Usage::

    python benchmarks/parallel_training.py            # all three parts (several minutes)
    python benchmarks/parallel_training.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tlroutes.data.builtin import load_builtin
from tlroutes.model import build_model
from tlroutes.train.parallel import FusedStep, run_jobs


def step_ratio(jobs: int, width: int, steps: int, repeats: int) -> dict:
    """Part 1: loop and fused per-step seconds, interleaved repeats."""
    problem = load_builtin("digits", task="digit")
    x, y = problem.train.x[:32], problem.train.y[:32]
    models = []
    for i in range(jobs):
        torch.manual_seed(i)
        models.append(build_model({"input": problem.domain}, {"task": problem.task}, "mlp",
                                  {"width": width}))
    fused = FusedStep(models, [str(i) for i in range(jobs)], problem.task)
    fused_opt = torch.optim.AdamW(fused.parameters(), lr=1e-3)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in models]
    batch = {str(i): (x, y) for i in range(jobs)}

    def loop() -> None:
        for model, opt in zip(models, opts, strict=True):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def fused_step() -> None:
        loss = fused(batch)
        fused_opt.zero_grad(set_to_none=True)
        loss.backward()
        fused_opt.step()

    def timed(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t0) / steps

    loop(), fused_step()
    per = {"loop": [], "fused": []}
    for r in range(repeats):
        order = [("loop", loop), ("fused", fused_step)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            per[name].append(timed(fn))
    ratios = [a / b for a, b in zip(per["loop"], per["fused"], strict=True)]
    return {"width": width, "loop_ms": 1e3 * statistics.median(per["loop"]),
            "fused_ms": 1e3 * statistics.median(per["fused"]),
            "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def small_jobs(jobs: int, epochs: int) -> dict:
    train = {"epochs": epochs, "batch_size": 32}
    return {f"job{i}": {"data": {"dataset": "digits", "task": "digit", "n": 600, "seed": i},
                        "model": {"trunk": "mlp", "trunk_args": {"width": 32}},
                        "training": train} for i in range(jobs)}


def large_jobs(width: int, epochs: int) -> dict:
    """Four jobs that could fuse (one architecture, task kind and training) but are large."""
    model = {"trunk": "mlp", "trunk_args": {"width": width, "depth": 3}}
    shifts = [{}, {"rotation": 20}, {"noise": 0.1}, {"blur": 0.6}]
    return {f"digits{i}": {"data": {"dataset": "digits", "task": "digit", "shift": shift},
                           "model": model, "training": {"epochs": epochs, "batch_size": 64}}
            for i, shift in enumerate(shifts)}


def wall(jobs: dict, backend: str, folder: Path) -> tuple[float, object]:
    t0 = time.perf_counter()
    outcome = run_jobs(jobs, folder, seed=0, backend=backend)
    failed = [n for n, r in outcome.results.items() if not r.ok]
    if failed:
        raise SystemExit(f"{backend}: jobs failed: {failed}")
    return time.perf_counter() - t0, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--small-epochs", type=int, default=3)
    parser.add_argument("--large-width", type=int, default=1024)
    parser.add_argument("--large-epochs", type=int, default=4)
    parser.add_argument("--large-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--step-threads", type=int, default=1)
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.widths, args.steps, args.repeats = [32], 5, 2
        args.small_epochs, args.large_width, args.large_epochs = 1, 256, 1
        args.large_repeats = 1

    print(f"torch {torch.__version__}, {os.cpu_count()} cores; part 1 at "
          f"{args.step_threads} thread(s), parts 2-3 at {args.threads}")
    torch.set_num_threads(args.step_threads)
    if 1 in args.parts:
        step_ratios(args)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if 2 in args.parts:
            whole_runs(args, Path(tmp))
        if 3 in args.parts:
            auto_on_large(args, Path(tmp))


def step_ratios(args) -> None:
    print(f"\n1. one training step of {args.jobs} same-architecture MLPs (digits, batch 32, "
          f"AdamW): Python loop vs fused ({args.repeats} interleaved repeats × {args.steps} "
          "steps)")
    print(f"{'width':>6} {'loop ms/step':>13} {'fused ms/step':>14} {'loop ÷ fused':>13}"
          f" {'(min–max)':>12}")
    for width in args.widths:
        r = step_ratio(args.jobs, width, args.steps, args.repeats)
        print(f"{r['width']:>6} {r['loop_ms']:>13.2f} {r['fused_ms']:>14.2f} "
              f"{r['ratio']:>12.1f}× {r['min']:>5.1f}–{r['max']:.1f}")


def whole_runs(args, tmp: Path) -> None:
    jobs = small_jobs(args.jobs, args.small_epochs)
    print(f"\n2. whole runs: {args.jobs} small jobs (mlp width 32, digits n=600, "
          f"{args.small_epochs} epochs, batch 32), run_jobs end to end")
    seq, _ = wall(jobs, "sequential", tmp / "s-seq")
    fus, _ = wall(jobs, "fused", tmp / "s-fused")
    print(f"   sequential {seq:.1f} s, fused {fus:.1f} s: {seq / fus:.1f}× faster")


def auto_on_large(args, tmp: Path) -> None:
    jobs = large_jobs(args.large_width, args.large_epochs)
    warm = {n: {**j, "training": {**j["training"], "epochs": 1}} for n, j in jobs.items()}
    wall(warm, "sequential", tmp / "l-warm")  # data caches, first calls: untimed
    print(f"\n3. auto on 4 large MLPs (width {args.large_width}, depth 3, all of digits, "
          f"{args.large_epochs} epochs, batch 64): sequential loop vs auto, alternating")
    loops, autos = [], []
    for r in range(args.large_repeats):
        for backend in (("sequential", "auto") if r % 2 == 0 else ("auto", "sequential")):
            seconds, outcome = wall(jobs, backend, tmp / f"l-{backend}-{r}")
            (loops if backend == "sequential" else autos).append(seconds)
            if backend == "auto":
                reason = outcome.plan.reason
    loop_s, auto_s = min(loops), min(autos)
    print(f"   sequential {loop_s:.1f} s (runs: {', '.join(f'{s:.1f}' for s in loops)}), "
          f"auto {auto_s:.1f} s (runs: {', '.join(f'{s:.1f}' for s in autos)}): "
          f"loop ÷ auto = {loop_s / auto_s:.2f}")
    print(f"   auto chose {reason}")


if __name__ == "__main__":
    main()
