"""Data pipeline: an image folder too large to hold, trained through the engine, against a
hand-written DataLoader loop — steps per second side by side, and peak memory.

What is measured
----------------
The script writes an ImageFolder of ``--images`` JPEGs (default 20,000) at ``--size`` pixels
(default 224) into a temporary folder (or ``--data-dir``, reused when it already holds them):
ten classes, each a coloured shape on a noisy background of its own tint. At 224 px the decoded
float32 train split alone would be 20,000 × 602 KB = 12 GB; the engine never holds it.

The same small CNN (:class:`SmallCNN`: three strided convolutions), the same train split (the
image source, :mod:`tlroutes.data.sources.images`, read lazily), the same transforms (decode
with Pillow, the source's train transform: horizontal flip, scale to [0, 1]), the same batch
size, workers
(``--workers``, default :func:`tlroutes.train.loading.default_workers`), threads
(``--threads``, default 1), optimiser (AdamW, lr 1e-3) and cosine schedule train two ways:

* **engine** — ``Trainer(...).fit(Stage(...))`` with one lazy :class:`Stream` (its DataLoader
  over a step-indexed dataset, each sample augmented under its own seed) and a ``steps`` budget;
  the time is the time inside ``Trainer._train_epoch`` (validation and checkpointing excluded,
  as in ``loop_overhead.py``; the workers' start is included on both sides);
* **hand-written** — a ``Dataset`` over the same files and transform, a ``DataLoader`` with
  ``shuffle=True``, the same workers, ``prefetch_factor=2`` and ``persistent_workers``, and the
  usual forward / cross-entropy / ``zero_grad`` / backward / ``step`` / scheduler loop.

They alternate (the first of each pair alternating too) ``--repeats`` times after one untimed
warm-up of each; the median of the per-pair ratios (engine steps/s ÷ hand-written steps/s) is
reported with its min and max.

Memory: the peak resident memory of the whole process tree (the training process and its
data-loading workers, summed — shared pages counted in every process, so an upper bound),
sampled every 20 ms with psutil, and ``getrusage``'s peaks of the process and of its largest
finished child.

The in-memory fast path against a raw loop is ``benchmarks/loop_overhead.py``'s figure.

Usage::

    python benchmarks/data_pipeline.py                       # 20,000 images, 3 x 100 steps
    python benchmarks/data_pipeline.py --quick               # 2,000 images, 2 x 30 steps
    python benchmarks/data_pipeline.py --steps 300 --repeats 5 --workers 2 --data-dir /tmp/imgs
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tlroutes.config import DataSpec
from tlroutes.data.load import load_problem
from tlroutes.problem import Problem
from tlroutes.train.engine import Stage, Trainer
from tlroutes.train.hardware import Hardware
from tlroutes.train.loading import default_workers
from tlroutes.train.steps import SupervisedStep
from tlroutes.train.streams import Stream

LR = 1e-3
CLASSES = 10


# ------------------------------------------------------------------------------ the images
def write_images(root: Path, n: int, size: int, seed: int = 0) -> float:
    """Write ``n`` JPEGs of ``size`` px into ``root/<class>/``; returns the seconds taken."""
    from PIL import Image, ImageDraw

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    tints = rng.integers(40, 200, size=(CLASSES, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    for k in range(CLASSES):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = i % CLASSES
        noise = rng.integers(-40, 40, size=(size // 4, size // 4, 3), dtype=np.int16)
        noise = noise.repeat(4, 0).repeat(4, 1)  # coarse noise: cheap to draw and to encode
        pixels = np.clip(tints[k] + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        cx, cy = rng.integers(size // 4, 3 * size // 4, size=2)
        r = int(rng.integers(size // 10, size // 4))
        colour = tuple(int(c) for c in 255 - tints[k])
        box = (cx - r, cy - r, cx + r, cy + r)
        if k % 3 == 0:
            draw.ellipse(box, fill=colour)
        elif k % 3 == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        image.save(root / f"class{k}" / f"{i:06d}.jpg", quality=85)
    del yy, xx
    return time.perf_counter() - t0


def ensure_images(root: Path, n: int, size: int) -> float:
    have = sum(1 for _ in root.glob("class*/*.jpg")) if root.is_dir() else 0
    return 0.0 if have == n else write_images(root, n, size)


# ------------------------------------------------------------------------------ memory
class PeakMemory:
    """The peak memory of this process and its children, summed, sampled in a thread: ``pss``
    (proportional set size: each shared page divided among the processes sharing it, so a
    forked worker's copy of torch counts once) and ``peak`` (resident sizes summed: shared pages
    counted in every process, an upper bound)."""

    def __init__(self, every: float = 0.2) -> None:
        import psutil

        self.proc, self.every, self.peak, self.pss = psutil.Process(), every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = pss = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker that just ended
                    full = p.memory_full_info()
                    total, pss = total + full.rss, pss + full.pss
            self.peak, self.pss = max(self.peak, total), max(self.pss, pss)
            time.sleep(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------ the model
class SmallCNN(torch.nn.Module):
    """Three strided convolutions (stride 4, 2, 2), global pooling and a linear head: a step
    costs about as much as reading its batch, so the pipeline's overhead shows."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 5, stride=4, padding=2), torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.BatchNorm2d(32),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.BatchNorm2d(64),
            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(64, classes)

    def forward(self, x: torch.Tensor, stem: str | None = None, head: str | None = None
                ) -> torch.Tensor:
        return self.head(self.body(x))


# ------------------------------------------------------------------------------ the two sides
class _TimedTrainer(Trainer):
    step_seconds = 0.0

    def _train_epoch(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return super()._train_epoch(*args, **kwargs)
        finally:
            self.step_seconds += time.perf_counter() - t0


def run_engine(problem: Problem, model: torch.nn.Module, args: argparse.Namespace,
               seed: int) -> float:
    """Steps per second of the engine's step loop."""
    with tempfile.TemporaryDirectory(prefix="tlroutes-bench-") as tmp:
        trainer = _TimedTrainer(tmp, seed=seed, progress=False, hardware=Hardware(
            accelerator="cpu", threads=args.threads, workers=args.workers))
        trainer.fit(Stage(
            name="bench", step=SupervisedStep(model, problem.task),
            streams={"train": Stream(problem.train, args.batch, seed=seed)},
            validate=lambda: {"accuracy": 0.0}, epochs=None, steps=args.steps, lr=LR))
        return args.steps / trainer.step_seconds


class _Files(torch.utils.data.Dataset):
    """The hand-written side's dataset: the same files, decode and train transform."""

    def __init__(self, reader: Any, transform: Any, y: torch.Tensor) -> None:
        self.reader, self.transform, self.y = reader, transform, y

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.reader.read(i)), self.y[i]


def run_hand_written(problem: Problem, model: torch.nn.Module, args: argparse.Namespace,
                     seed: int) -> float:
    """Steps per second of a plain DataLoader loop."""
    torch.set_num_threads(args.threads)
    lazy = problem.train.x
    rows = lazy.index if lazy.index is not None else torch.arange(len(lazy.reader))
    reader = _Subset(lazy.reader, rows.tolist())
    data = _Files(reader, lazy.train_transform or lazy.transform, problem.train.y)
    extra = {"prefetch_factor": 2, "persistent_workers": True} if args.workers else {}
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
        generator=torch.Generator().manual_seed(seed), **extra)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(1.0, s / args.steps))))
    model.train()
    t0 = time.perf_counter()
    done = 0
    total = torch.zeros(())
    while done < args.steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
            done += 1
            if done == args.steps:
                break
    seconds = time.perf_counter() - t0
    del loader
    return args.steps / seconds


class _Subset:
    def __init__(self, reader: Any, rows: list[int]) -> None:
        self.reader, self.rows = reader, rows

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int) -> Any:
        return self.reader.read(self.rows[i])


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None,
                        help="data-loading workers (default: the engine's default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the images are written (reused when complete); default: a "
                        "temporary folder, deleted at the end")
    parser.add_argument("--quick", action="store_true", help="2,000 images, 2 x 30 steps")
    args = parser.parse_args()
    if args.quick:
        args.images, args.steps, args.repeats = 2_000, 30, 2
    if args.workers is None:
        args.workers = default_workers()
    torch.set_num_threads(args.threads)

    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlroutes-images-")
        args.data_dir = Path(tmp.name)
    try:
        made = ensure_images(args.data_dir, args.images, args.size)
        print(f"images: {args.images:,} at {args.size} px in {args.data_dir}"
              + (f" (written in {made:.0f} s)" if made else " (reused)"))
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            problem = load_problem(DataSpec(
                dataset=str(args.data_dir), task="classification", split=(0.9, 0.05, 0.05),
                transforms={"size": args.size, "mode": "RGB", "train": ["horizontal_flip"]}),
                seed=0, role="bench")
            print(f"loaded: {len(problem.train):,} train images, lazy={problem.train.is_lazy}, "
                  f"in {time.perf_counter() - t0:.1f} s; batch {args.batch}, "
                  f"{args.workers} worker(s), {args.threads} thread(s), {args.steps} steps a run")
            torch.manual_seed(0)
            base = SmallCNN(len(problem.task.labels))
            run_engine(problem, copy.deepcopy(base), _warmup(args), 0)
            run_hand_written(problem, copy.deepcopy(base), _warmup(args), 0)
            ratios, engine, hand = [], [], []
            engine_pss = engine_rss = 0
            for r in range(args.repeats):
                order = (run_engine, run_hand_written) if r % 2 == 0 else \
                    (run_hand_written, run_engine)
                got = {}
                for fn in order:
                    # The engine's memory alone: the hand-written loop's workers are gone first.
                    gc.collect()
                    with PeakMemory() as mem:
                        got[fn] = fn(problem, copy.deepcopy(base), args, r + 1)
                    if fn is run_engine:
                        engine_pss = max(engine_pss, mem.pss)
                        engine_rss = max(engine_rss, mem.peak)
                engine.append(got[run_engine])
                hand.append(got[run_hand_written])
                ratios.append(engine[-1] / hand[-1])
                print(f"  repeat {r + 1}: engine {engine[-1]:.2f} steps/s, hand-written "
                      f"{hand[-1]:.2f} steps/s, ratio {ratios[-1]:.3f}", flush=True)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"engine / hand-written steps/s: median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}); engine median "
              f"{statistics.median(engine):.2f} steps/s, hand-written "
              f"{statistics.median(hand):.2f} steps/s")
        print(f"peak memory of the process tree while the engine trains: PSS "
              f"{engine_pss / 2**20:,.0f} MiB, RSS summed {engine_rss / 2**20:,.0f} MiB; over "
              f"the whole benchmark (both sides, all repeats): PSS {memory.pss / 2**20:,.0f} MiB, "
              f"RSS summed {memory.peak / 2**20:,.0f} MiB (getrusage peaks: process "
              f"{own:,.0f} MiB, largest worker {child:,.0f} MiB)")
    finally:
        if tmp is not None:
            tmp.cleanup()


def _warmup(args: argparse.Namespace) -> argparse.Namespace:
    warm = copy.copy(args)
    warm.steps = max(3, args.steps // 10)
    return warm


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
