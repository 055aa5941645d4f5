"""Loop overhead: the engine's training steps per second ÷ a hand-written PyTorch loop's.

What is measured
----------------
The same model (a built-in trunk from :func:`tlroutes.model.build_model`), the same in-memory data
(built-in ``digits``, train split, ``(1, 8, 8)`` images), the same batch size, optimiser (AdamW,
lr 1e-3), schedule (cosine ``LambdaLR`` stepped every step) and ``torch.set_num_threads`` are
trained two ways, side by side in one process:

* **engine** — ``Trainer(run_dir=<fresh temp dir>, progress=False).fit(Stage(...))`` with a
  :class:`~tlroutes.train.steps.SupervisedStep`, one :class:`~tlroutes.train.streams.Stream` and a
  trivial ``validate`` that returns a constant (so validation costs nothing and the measurement
  is about the loop, not about evaluating);
* **hand-written** — the nanoGPT-style minimum a competent user writes: index a shuffled
  permutation of the in-memory tensors, forward, cross-entropy, ``zero_grad(set_to_none=True)``,
  backward, ``AdamW.step()``, ``LambdaLR.step()``, and the loss summed as a tensor (read once per
  epoch, as the engine does).

Two ratios are reported, each the engine's steps/s over the hand-written loop's steps/s:

* **steps** — only the training steps. The engine's step-loop time is the time spent inside
  ``Trainer._train_epoch`` (timed by a benchmark-only subclass that wraps it; engine code is
  not changed), so per-epoch validation, checkpointing and metrics logging are excluded. This is
  the per-step overhead of the engine (Fabric's wrappers, the per-step finiteness check, stream
  indexing, the step module) and the figure the ``≥ 0.95`` target refers to.
* **fit** — the engine's whole ``fit()`` wall time (per-epoch validation call, per-epoch
  checkpoint of weights + optimizer + scheduler + RNG state, best/final weights, ``done.json``,
  metrics log), against the same hand-written loop, which saves nothing. This is what a user
  pays end to end for resumability; it shrinks as epochs get longer.

Runs are interleaved (engine and hand-written alternate, the first of each pair alternating too,
after one untimed warm-up of each), and the reported figure is the median of the per-repeat
ratios, with the min and max, and the best-of ratio (fastest engine run over fastest
hand-written run). The machine may be noisy; only the ratios are meant to be read.

Threads: by default both loops use the count the engine ships (``make_fabric``: cores divided
among the processes). On a machine shared with other jobs, several threads per process make both
loops erratic (OpenMP workers wait on descheduled siblings); ``--threads 1`` then measures the
loop rather than the load.

Usage::

    python benchmarks/loop_overhead.py               # mlp and cnn2d, batch 64, 5 repeats, 3 x 100
    python benchmarks/loop_overhead.py --quick       # smoke run: 2 repeats, 2 epochs x 30 steps
    python benchmarks/loop_overhead.py --threads 1 --repeats 11 --batch-sizes 64 256
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tlroutes.data.builtin import load_builtin
from tlroutes.model import build_model
from tlroutes.problem import Problem
from tlroutes.train.engine import Stage, Trainer
from tlroutes.train.hardware import Hardware
from tlroutes.train.steps import SupervisedStep
from tlroutes.train.streams import Stream

LR = 1e-3


class _TimedTrainer(Trainer):
    """A Trainer that also adds up the time spent in its training-step loop (benchmark only)."""

    step_seconds = 0.0

    def _train_epoch(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return super()._train_epoch(*args, **kwargs)
        finally:
            self.step_seconds += time.perf_counter() - t0


@dataclass
class Timing:
    steps: int
    step_s: float  # seconds in the training steps only
    fit_s: float  # seconds end to end (equal to step_s for the hand-written loop)
    final_loss: float  # mean training loss of the last epoch (a sanity check that both train)


def _model(problem: Problem, trunk: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(problem.domain, problem.task, trunk=trunk)


def run_engine(problem: Problem, trunk: str, batch: int, epochs: int, steps: int,
               seed: int, threads: int | None) -> Timing:
    """Train with the engine; time the step loop and the whole ``fit()``."""
    model = _model(problem, trunk, seed)
    with tempfile.TemporaryDirectory(prefix="tlroutes-bench-") as tmp:
        trainer = _TimedTrainer(tmp, seed=seed, progress=False,
                                hardware=Hardware(accelerator="cpu", threads=threads))
        if threads is not None and torch.get_num_threads() != threads:
            raise RuntimeError(f"the engine runs {torch.get_num_threads()} threads, not {threads}")
        stage = Stage(
            name="bench",
            step=SupervisedStep(model, problem.task),
            streams={"train": Stream(problem.train, batch, seed=seed)},
            validate=lambda: {"accuracy": 0.0},
            epochs=epochs,
            steps_per_epoch=steps,
            lr=LR,
            optimizer="adamw",
            scheduler="cosine",
        )
        gc.collect()
        t0 = time.perf_counter()
        result = trainer.fit(stage)
        fit_s = time.perf_counter() - t0
    return Timing(epochs * steps, trainer.step_seconds, fit_s, result.history[-1]["train_loss"])


def run_hand_written(problem: Problem, trunk: str, batch: int, epochs: int, steps: int,
                     seed: int, threads: int) -> Timing:
    """Train with the plain PyTorch loop a competent user writes (nanoGPT style)."""
    torch.set_num_threads(threads)
    model = _model(problem, trunk, seed)
    x, y = problem.train.x, problem.train.y
    n = len(x)
    per_pass = math.ceil(n / batch)
    total_steps = epochs * steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / total_steps)))
    )
    g = torch.Generator().manual_seed(seed)
    model.train()
    gc.collect()
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=g)
    k = 0
    for _ in range(epochs):
        loss_sum = torch.zeros(())
        for _ in range(steps):
            if k == per_pass:
                perm, k = torch.randperm(n, generator=g), 0
            idx = perm[k * batch : (k + 1) * batch]
            k += 1
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()
        final_loss = float(loss_sum) / steps
    elapsed = time.perf_counter() - t0
    return Timing(total_steps, elapsed, elapsed, final_loss)


def measure(problem: Problem, trunk: str, batch: int, epochs: int, steps: int, repeats: int,
            threads: int) -> dict[str, list[float]]:
    """Interleaved engine / hand-written runs; per-repeat rates and ratios."""
    engine = lambda: run_engine(problem, trunk, batch, epochs, steps, 0, threads)  # noqa: E731
    hand = lambda: run_hand_written(problem, trunk, batch, epochs, steps, 0, threads)  # noqa: E731
    # Warm-up (lazy initialisation, kernel selection, allocator), untimed, short.
    run_engine(problem, trunk, batch, 1, min(steps, 20), 0, threads)
    run_hand_written(problem, trunk, batch, 1, min(steps, 20), 0, threads)
    out: dict[str, list[float]] = {k: [] for k in (
        "engine_steps", "engine_fit", "hand", "ratio_steps", "ratio_fit", "overhead_us",
        "epoch_ms", "loss_e", "loss_h")}
    for r in range(repeats):
        if r % 2 == 0:
            e, h = engine(), hand()
        else:
            h, e = hand(), engine()
        out["engine_steps"].append(e.steps / e.step_s)
        out["engine_fit"].append(e.steps / e.fit_s)
        out["hand"].append(h.steps / h.step_s)
        out["ratio_steps"].append(out["engine_steps"][-1] / out["hand"][-1])
        out["ratio_fit"].append(out["engine_fit"][-1] / out["hand"][-1])
        out["overhead_us"].append((e.step_s - h.step_s) / e.steps * 1e6)
        out["epoch_ms"].append((e.fit_s - e.step_s) / epochs * 1e3)
        out["loss_e"].append(e.final_loss)
        out["loss_h"].append(h.final_loss)
    return out


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} [min {min(values):.3f}, max {max(values):.3f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs per config")
    parser.add_argument("--steps", type=int, default=100, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run")
    parser.add_argument("--trunks", nargs="+", default=["mlp", "cnn2d"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both loops; default: what the engine ships "
                        "(cores // processes)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 repeats, 2 epochs x 30 steps, batch 64")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.epochs, args.batch_sizes = 2, 30, 2, [64]

    problem = load_builtin("digits")
    # The thread count the engine ships: make_fabric divides the cores among the processes.
    threads = args.threads or max(1, (os.cpu_count() or 1) // Hardware().devices)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, threads {threads} "
          f"(engine: cores // processes), python {sys.version.split()[0]}")
    print(f"data: digits train split {tuple(problem.train.x.shape)}; "
          f"{args.epochs} epochs x {args.steps} steps; {args.repeats} repeats, interleaved\n")

    print("columns: steps/s of the hand-written loop and of the engine's step loop (medians);")
    print("  ratio (steps): median, min and max of the per-repeat engine/hand ratios; best-of:")
    print("  fastest engine run / fastest hand run; fit: steps / whole fit() time and its ratio;")
    print("  extra us: engine minus hand-written time per step (median, microseconds);")
    print("  epoch ms: the engine's time per epoch outside the steps (validation call,")
    print("  checkpoint, metrics line; fit set-up and wrap-up spread over the epochs);")
    print("  loss e/h: last-epoch training loss of each (a check that both train alike)\n")
    header = (f"{'trunk':<6} {'batch':>5} {'hand':>9} {'engine':>9} {'ratio':>7} {'min':>6} "
              f"{'max':>6} {'best-of':>7} {'fit':>9} {'ratio':>7} {'extra us':>8} "
              f"{'epoch ms':>8}  "
              f"{'loss e/h':>11}")
    print(header)
    print("-" * len(header))
    all_steps: list[float] = []
    all_fit: list[float] = []
    for trunk in args.trunks:
        for batch in args.batch_sizes:
            m = measure(problem, trunk, batch, args.epochs, args.steps, args.repeats, threads)
            med = statistics.median
            best = max(m["engine_steps"]) / max(m["hand"])
            print(f"{trunk:<6} {batch:>5} {med(m['hand']):>9.1f} {med(m['engine_steps']):>9.1f} "
                  f"{med(m['ratio_steps']):>7.3f} {min(m['ratio_steps']):>6.3f} "
                  f"{max(m['ratio_steps']):>6.3f} {best:>7.3f} {med(m['engine_fit']):>9.1f} "
                  f"{med(m['ratio_fit']):>7.3f} {med(m['overhead_us']):>8.0f} "
                  f"{med(m['epoch_ms']):>8.1f}  "
                  f"{med(m['loss_e']):.3f}/{med(m['loss_h']):.3f}",
                  flush=True)
            all_steps += m["ratio_steps"]
            all_fit += m["ratio_fit"]
    print()
    print(f"ratio (engine/hand-written steps per s), steps only: {_summary(all_steps)}")
    print(f"ratio (engine/hand-written steps per s), whole fit:  {_summary(all_fit)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
