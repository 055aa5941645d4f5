"""Feature cache: Task Adaptation head training on cached features vs recomputing the trunk.

What is measured
----------------
Task Adaptation freezes the carried-over stem and trunk and trains only a new head. With the
recipe's ``cache_features: true`` (the default) the frozen trunk's features are computed once
(:func:`tlroutes.train.features.cache_features`) and every epoch then costs only the head's work;
with ``false`` every training step runs the frozen stem and trunk again. This script measures how
much the cache saves, with a frozen **pretrained EfficientNet-Lite0** trunk (ImageNet weights from
the ``vision`` extra, in ``eval()`` mode) behind the ``imagenet`` stem (8×8 digits resized to
``--size``², grey → RGB, ImageNet normalisation) and a new head (``Linear(1280, 128) → ReLU →
Linear``) for a new task kind on built-in ``digits``: ``properties`` (multilabel: even, >4, prime,
loop; default) or ``position`` (regression of where the digit sits on a 16×16 canvas).

Part 1 — the training loop (the primary figure). One minimal PyTorch loop is used for both sides
(not the engine, so that per-epoch checkpointing and validation do not blur the comparison): the
same shuffled order of the train split, AdamW (lr 1e-3), ``zero_grad / backward / step``, from
the same initial head weights. The only difference is where a batch's features come from:

* **recompute** — ``with torch.no_grad(): f = model.features(x[idx])`` (stem + trunk) every step;
* **cached** — ``f = cached[idx]``, after one ``cache_features(model, train)`` pass (timed
  separately; it runs the same stem + trunk once over the train split). The pass is timed at
  ``cache_features``' default batch of 1024 samples (what the route uses) and at the training
  batch size, since on a small CPU the large batch can be slower per sample than the small one.

Reported per repeat (the cached epoch is timed ``--cached-epochs`` times per repeat and its
median kept), then as medians over repeats (recompute and cached runs are interleaved, the
order alternating, after an untimed warm-up of each): seconds per epoch of each side, the
**per-epoch ratio** recompute / cached, and the **amortised ratio** for E epochs, counting the
one-off cache pass: ``E·t_recompute / (t_cache + E·t_cached)`` for E = 1, 5, 20, and the break-even
``t_cache / (t_recompute - t_cached)`` (epochs after which the cache has paid for itself), for
each cache batch. Checks printed: the largest difference between cached and recomputed
features, and both sides' mean training loss in the last epoch (equal up to float rounding).

Part 2 — end to end through the route (``--route-epochs E``, 0 skips it): ``tlroutes.run`` of a
Task Adaptation run file (``source: null``, the pretrained trunk is the source; ``baseline:
false``) with ``cache_features: true`` and ``false``, E epochs each. Reported: the whole run's
wall time, and the median per-epoch ``time_s`` of the ``probe`` stage from ``metrics.jsonl``
(which for the engine includes validation and the per-epoch checkpoint: the uncached route
validates by running the trunk over the validation split and checkpoints the whole step module,
the cached one does neither).

Only ratios are meant to be read: the machine may be shared and noisy.

Usage::

    python benchmarks/feature_cache.py --quick                # smoke run (under a minute or two)
    python benchmarks/feature_cache.py                        # 3 repeats, size 64, all digits
    python benchmarks/feature_cache.py --task position --size 96 --repeats 5 --route-epochs 0
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tlroutes.config import parse_run
from tlroutes.data import load_builtin
from tlroutes.model import build_model, freeze
from tlroutes.objectives.tasks import task_loss
from tlroutes.problem import Problem
from tlroutes.runner import run
from tlroutes.train.features import cache_features

EPOCHS_AMORTISED = (1, 5, 20)


def load(args: argparse.Namespace) -> Problem:
    canvas = 16 if args.task == "position" else None
    return load_builtin("digits", task=args.task, n=args.n, seed=0, canvas=canvas)


def make_model(problem: Problem, size: int, hidden: int):
    """The route's model: pretrained trunk + imagenet stem, frozen; a new head for the task."""
    model = build_model(problem.domain, {"target": problem.task}, trunk="efficientnet_lite0",
                        stem="imagenet", stem_args={"size": size},
                        head_args={"hidden": hidden})
    freeze(model, parts=["stems", "trunk"])
    # The whole model in eval mode (train_epoch puts only the head in train mode): the frozen
    # trunk's BatchNorm uses its running statistics and drop-connect is off, on both sides.
    # (cache_features restores the mode it found, so a model left in train mode would run the
    # trunk in train mode on the recompute side after the first cache pass.)
    model.eval()
    return model


def train_epoch(model, head, features_of, y, order, batch: int, task) -> tuple[float, float]:
    """One epoch of head training; ``features_of(idx)`` gives a batch's features.

    Returns (seconds, mean loss). The same loop serves both sides.
    """
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    head.train()
    total = torch.zeros(())
    steps = 0
    gc.collect()
    t0 = time.perf_counter()
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        f = features_of(idx)
        loss = task_loss(task, head(f), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
        steps += 1
    return time.perf_counter() - t0, float(total) / steps


def measure(problem: Problem, args: argparse.Namespace) -> dict[str, list[float]]:
    model = make_model(problem, args.size, args.hidden)
    head = model.heads["target"]
    init = {k: v.clone() for k, v in head.state_dict().items()}
    x, y = problem.train.x, problem.train.y
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))

    def recompute(idx):
        with torch.no_grad():
            return model.features(x[idx])

    def recompute_epoch(order=order):
        head.load_state_dict(init)
        return train_epoch(model, head, recompute, y, order, args.batch_size, problem.task)

    def cache_pass(batch: int | None):
        gc.collect()
        t0 = time.perf_counter()
        cached = (cache_features(model, problem.train) if batch is None
                  else cache_features(model, problem.train, batch_size=batch))
        return time.perf_counter() - t0, cached

    def cached_epoch(order=order, first_default=True):
        # The cache pass twice: at cache_features' default batch (1024, what the route uses)
        # and at the training batch; the order alternates between repeats.
        if first_default:
            t_cache, cached = cache_pass(None)
            t_cache_b, _ = cache_pass(args.batch_size)
        else:
            t_cache_b, _ = cache_pass(args.batch_size)
            t_cache, cached = cache_pass(None)
        # A cached epoch takes milliseconds: time several (each from the same initial head)
        # and keep the median, so that one scheduling hiccup does not decide the ratio.
        runs = []
        for _ in range(args.cached_epochs):
            head.load_state_dict(init)
            runs.append(train_epoch(model, head, lambda idx: cached.x[idx], y, order,
                                    args.batch_size, problem.task))
        t = statistics.median(r[0] for r in runs)
        return t_cache, t_cache_b, t, runs[-1][1], cached.x

    # Warm-up (allocator, kernel choice, lazy init), untimed: a few batches of each.
    short = order[: 2 * args.batch_size]
    recompute_epoch(short)
    train_epoch(model, head, lambda idx: torch.zeros(len(idx), 1280), y, short,
                args.batch_size, problem.task)
    cache_features(model, problem.train.subset(short))

    out: dict[str, list[float]] = {k: [] for k in (
        "recompute", "cache", "cache_b", "cached", "loss_r", "loss_c", "ratio", *[
            f"amortised_{e}" for e in EPOCHS_AMORTISED], *[
            f"amortised_b_{e}" for e in EPOCHS_AMORTISED])}
    feats = None
    for r in range(args.repeats):
        if r % 2 == 0:
            t_r, loss_r = recompute_epoch()
            t_cache, t_cache_b, t_c, loss_c, feats = cached_epoch(first_default=True)
        else:
            t_cache, t_cache_b, t_c, loss_c, feats = cached_epoch(first_default=False)
            t_r, loss_r = recompute_epoch()
        out["recompute"].append(t_r)
        out["cache"].append(t_cache)
        out["cache_b"].append(t_cache_b)
        out["cached"].append(t_c)
        out["loss_r"].append(loss_r)
        out["loss_c"].append(loss_c)
        out["ratio"].append(t_r / t_c)
        for e in EPOCHS_AMORTISED:
            out[f"amortised_{e}"].append(e * t_r / (t_cache + e * t_c))
            out[f"amortised_b_{e}"].append(e * t_r / (t_cache_b + e * t_c))
        print(f"  repeat {r}: recompute {t_r:.2f}s/epoch, cache pass {t_cache:.2f}s (batch "
              f"1024) / {t_cache_b:.2f}s (batch {args.batch_size}), cached "
              f"{t_c * 1e3:.1f}ms/epoch, ratio {t_r / t_c:.0f}x", flush=True)
    # Check: cached features equal recomputed ones (first batch).
    idx = order[: args.batch_size]
    diff = (recompute(idx) - feats[idx]).abs().max().item()
    out["feature_diff"] = [diff]
    return out


def route_timing(args: argparse.Namespace, epochs: int) -> dict[str, dict[str, float]]:
    """Whole-route wall time and per-epoch probe time, cache_features true vs false."""
    results: dict[str, dict[str, float]] = {}
    target = {"dataset": "digits", "task": args.task, "seed": 0}
    if args.n is not None:
        target["n"] = args.n
    if args.task == "position":
        target["canvas"] = 16
    for cache in (False, True):
        spec = {
            "route": "task_adaptation",
            "source": None,
            "target": target,
            "model": {"trunk": "efficientnet_lite0", "stem": "imagenet",
                      "stem_args": {"size": args.size}},
            "target_training": {"epochs": epochs, "batch_size": args.batch_size},
            "baseline": False,
            "recipe": {"head_hidden": args.hidden, "cache_features": cache},
            "hardware": {"accelerator": "cpu", "threads": args.threads},
        }
        with tempfile.TemporaryDirectory(prefix="tlroutes-cache-") as tmp:
            gc.collect()
            t0 = time.perf_counter()
            summary = run(parse_run(spec), Path(tmp) / "run", progress=False)
            wall = time.perf_counter() - t0
            lines = [json.loads(s) for s in
                     (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        per_epoch = statistics.median(r["time_s"] for r in lines if r["stage"] == "probe")
        metric = next(iter(summary.metrics.items()))
        results["cached" if cache else "recompute"] = {
            "wall": wall, "epoch": per_epoch, "metric": metric[1], "metric_name": metric[0]}
        print(f"  route cache_features={str(cache).lower():<5}: run {wall:.1f}s, probe epoch "
              f"{per_epoch:.3f}s, test {metric[0]} {metric[1]:.3f}", flush=True)
    return results


def _m(values: list[float]) -> str:
    return (f"median {statistics.median(values):.1f} [min {min(values):.1f}, "
            f"max {max(values):.1f}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="properties", choices=["properties", "position"])
    parser.add_argument("--size", type=int, default=64, help="imagenet stem side (default 64)")
    parser.add_argument("--n", type=int, default=None, help="digits kept (default: all 1797)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128, help="head hidden width")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--cached-epochs", type=int, default=5,
                        help="cached epochs timed per repeat (their median is used)")
    parser.add_argument("--route-epochs", type=int, default=3,
                        help="epochs of the end-to-end route comparison; 0 skips it")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default: all cores); on a shared, "
                        "oversubscribed machine 1 avoids OpenMP threads waiting on each other")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: n=300, size 32, 1 repeat, 1 route epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.size, args.repeats, args.route_epochs = 300, 32, 1, 1

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    problem = load(args)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, threads {torch.get_num_threads()}, "
          f"python {sys.version.split()[0]}")
    print(f"digits task '{args.task}' ({problem.task.kind}), train split "
          f"{tuple(problem.train.x.shape)}; efficientnet_lite0 (pretrained, frozen, eval) + "
          f"imagenet stem {args.size}x{args.size}; head Linear(1280, {args.hidden}) -> ReLU -> "
          f"Linear({problem.task.num_outputs}); batch "
          f"{args.batch_size}; {args.repeats} repeats, interleaved\n")
    print("part 1: one minimal loop for both sides (training steps only)")
    m = measure(problem, args)
    med = statistics.median
    print()
    header = (f"{'cache batch':>11} {'recompute s/epoch':>18} {'cache pass s':>13} "
              f"{'cached ms/epoch':>16} {'per-epoch ratio':>16} "
              + " ".join(f"{f'E={e}':>7}" for e in EPOCHS_AMORTISED) + f" {'break-even':>11}")
    print(header)
    print("-" * len(header))
    breakeven = {}
    for label, key, amort in (("1024 (dflt)", "cache", "amortised"),
                              (str(args.batch_size), "cache_b", "amortised_b")):
        breakeven[key] = med(m[key]) / max(med(m["recompute"]) - med(m["cached"]), 1e-12)
        print(f"{label:>11} {med(m['recompute']):>18.2f} {med(m[key]):>13.2f} "
              f"{med(m['cached']) * 1e3:>16.1f} {med(m['ratio']):>15.0f}x " + " ".join(
                  f"{med(m[f'{amort}_{e}']):>6.2f}x" for e in EPOCHS_AMORTISED)
              + f" {breakeven[key]:>7.2f} ep")
    print(f"\nchecks: max |cached - recomputed feature| = {m['feature_diff'][0]:.2e}; "
          f"last-epoch loss recompute {med(m['loss_r']):.5f} / cached {med(m['loss_c']):.5f}")
    print(f"per-epoch ratio (recompute / cached): {_m(m['ratio'])}")
    for label, key, amort in (("cache_features default batch 1024", "cache", "amortised"),
                              (f"cache batch {args.batch_size}", "cache_b", "amortised_b")):
        for e in EPOCHS_AMORTISED:
            v = m[f"{amort}_{e}"]
            print(f"amortised ratio over {e:>2} epoch(s), {label}: median {med(v):.2f}x "
                  f"[min {min(v):.2f}, max {max(v):.2f}]")
        print(f"break-even, {label}: the cache pays for itself after {breakeven[key]:.2f} "
              "epoch(s)")

    if args.route_epochs:
        print(f"\npart 2: end to end, tlroutes.run of Task Adaptation, {args.route_epochs} "
              "epoch(s) each (engine: validation + checkpoint every epoch)")
        r = route_timing(args, args.route_epochs)
        print(f"route: whole run recompute/cached = "
              f"{r['recompute']['wall'] / r['cached']['wall']:.2f}x; per probe epoch = "
              f"{r['recompute']['epoch'] / r['cached']['epoch']:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
