"""Transferability scores vs fine-tuning: do the scores rank a zoo of trunks as fine-tuning does?

What is measured
----------------
A zoo of small ``cnn2d`` trunks (with their ``conv2d`` stems) is pretrained on variants of the
built-in ``digits``; each is then scored on one target problem by
:func:`tlroutes.measure.transferability.rank_trunks` (LogME, shrinkage H-score, k-NN and
linear-probe accuracy; LEEP and NCE for the trunks whose source head is a classifier), and then
**fine-tuned** on that target with the same budget for all (new head, every parameter trained,
``--seeds`` fine-tuning seeds). Reported: a table of every score and the mean fine-tuned test
accuracy per trunk, and the Kendall τ-b (``scipy.stats.kendalltau``) between each score and the
fine-tuned accuracy over the trunks the score rates.

Data (no image is shared between source and target). ``load_builtin("digits", split=(0.5,
0.15, 0.35), seed=0)`` splits the 1797 digits the same way for every task variant and shift
(the split depends only on the seed): the **source pool** is its train + validation part (1168
images; sources train on its train part and select on its validation part), the **target
pool** its test part (629 images), from which the target takes ``--target-per-class`` training
and 10 validation images per digit (seeded, stratified); the rest is the target's test split.

The target: unshifted digits, task ``digit`` (10 classes), with few training images. The zoo
(source pool, ``--source-epochs`` epochs at lr 3e-3, batch 64, best validation epoch):

==============  ===============================================================================
trunk           pretrained on
==============  ===============================================================================
digit           task ``digit`` (the target's own task and domain, other images)
digit0-4        task ``digit``, digits 0–4 only (5 classes)
parity          task ``parity`` (even / odd)
gt4             task ``gt4`` (<= 4 / > 4)
properties      task ``properties`` (multilabel: even, > 4, prime, loop) — no LEEP/NCE
rot45           task ``digit`` on digits rotated by 45°
inverted        task ``digit`` on inverted digits (1 - x)
noisy           task ``digit`` with Gaussian pixel noise (σ 0.4)
digit-few       task ``digit`` on 30 source images (3 per digit)
random          nothing: the untrained initialisation (fine-tuning it = training from scratch)
==============  ===============================================================================

Fine-tuning (each trunk, each seed): the carried stem and trunk plus a new linear head, all
trained with AdamW at lr 1e-3, cosine schedule, batch 32, ``--target-epochs`` epochs, the best
target-validation epoch kept (the engine's :class:`~tlroutes.train.engine.Trainer`); test
accuracy of that epoch, averaged over seeds. Scores are computed on the target's training images
only (the images fine-tuning trains on), with ``--bootstrap`` resamples for the intervals.

Why the defaults (15 training images per digit, 10 fine-tuning epochs): with a longer budget
(20 per digit, 30 epochs) every trunk, the random one included, fine-tunes to 0.93–0.96 and the
differences are within seed noise, so there is nothing to rank. And LogME's bootstrap interval
needs more distinct samples per resample (about 0.63 N) than feature dimensions (64 here), so
N should stay above about 110 (see :func:`~tlroutes.measure.transferability.rank_trunks`).

Usage::

    python benchmarks/transferability_zoo.py --quick        # smoke run (about a minute)
    python benchmarks/transferability_zoo.py --threads 1    # the figures in RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau

from tlroutes.backbones import create_head
from tlroutes.config import TrainSpec
from tlroutes.data import load_builtin
from tlroutes.measure.transferability import SCORES, rank_trunks
from tlroutes.model import TransferModel, build_model
from tlroutes.problem import Problem, Split
from tlroutes.train.engine import Trainer
from tlroutes.train.from_spec import evaluate, supervised_stage
from tlroutes.train.hardware import Hardware, make_fabric

SPLIT = (0.5, 0.15, 0.35)
#: name -> (task variant, shift, classes, source training images kept or None for all)
ZOO: dict[str, tuple[str, dict[str, Any] | None, list[int] | None, int | None]] = {
    "digit": ("digit", None, None, None),
    "digit0-4": ("digit", None, [0, 1, 2, 3, 4], None),
    "parity": ("parity", None, None, None),
    "gt4": ("gt4", None, None, None),
    "properties": ("properties", None, None, None),
    "rot45": ("digit", {"rotation": 45}, None, None),
    "inverted": ("digit", {"inversion": True}, None, None),
    "noisy": ("digit", {"noise": 0.4}, None, None),
    "digit-few": ("digit", None, None, 30),
    "random": ("digit", None, None, None),
}


def stratified(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Positions of ``per_class`` random samples of every class (seeded)."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(y):
        where = torch.nonzero(y == c).flatten()
        picks.append(where[torch.randperm(where.numel(), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def source_problem(name: str) -> Problem:
    """The source pool under the variant's task and shift (train: pool train; val: pool val)."""
    task, shift, classes, keep = ZOO[name]
    full = load_builtin("digits", task=task, shift=shift, seed=0, split=SPLIT)
    train, val, source_task = full.train, full.val, full.task
    if classes is not None:
        # Filter the full split rather than pass classes= to load_builtin: a class subset is
        # split differently, and would take images from the target pool.
        source_task = load_builtin("digits", task=task, classes=classes, n=30).task
        train = train.subset(torch.nonzero(torch.isin(train.y, torch.tensor(classes))).flatten())
        val = val.subset(torch.nonzero(torch.isin(val.y, torch.tensor(classes))).flatten())
    if keep is not None:
        train = train.subset(stratified(train.y, keep // 10, seed=1))
    return Problem(f"source:{name}", source_task, full.domain, train, val, val,
                   meta=full.meta).validate()


def overlap(a: Split, b: Split) -> int:
    """How many images of ``a`` also occur (exactly) in ``b``."""
    seen = {bytes(row.numpy().tobytes()) for row in b.x.flatten(1)}
    return sum(bytes(row.numpy().tobytes()) in seen for row in a.x.flatten(1))


def target_problem(per_class: int) -> Problem:
    """Digits 'digit' on the target pool (the test part of SPLIT): few train, 10/class val."""
    full = load_builtin("digits", task="digit", seed=0, split=SPLIT)
    pool = full.test
    train = stratified(pool.y, per_class, seed=2)
    rest = torch.ones(len(pool), dtype=torch.bool)
    rest[train] = False
    left = torch.nonzero(rest).flatten()
    val = left[stratified(pool.y[left], 10, seed=3)]
    rest[val] = False
    test = torch.nonzero(rest).flatten()
    return Problem(f"digits/digit[{per_class}/class]", full.task, full.domain,
                   pool.subset(train), pool.subset(val), pool.subset(test),
                   meta={"pool": "digits test part of split (0.5, 0.15, 0.35), seed 0"}).validate()


def pretrain(name: str, root: Path, fabric, epochs: int) -> TransferModel:
    """A stem + trunk + source head trained on the variant (untrained for 'random')."""
    source = source_problem(name)
    trainer = Trainer(root / f"source-{name}", seed=0, progress=False, fabric=fabric)
    trainer.seed_for("model", name)
    model = build_model({"input": source.domain}, {"source": source.task}, trunk="cnn2d")
    if name != "random":
        spec = TrainSpec(epochs=epochs, batch_size=64, lr=3e-3)
        trainer.fit(supervised_stage("source", model, source, spec, seed=0, head="source"))
    return model


def fine_tune(source: TransferModel, target: Problem, root: Path, fabric, seed: int,
              epochs: int) -> float:
    """Target test accuracy after fine-tuning a copy of ``source``'s stem and trunk."""
    trainer = Trainer(root, seed=seed, progress=False, fabric=fabric)
    trainer.seed_for("target-head")
    model = copy.deepcopy(source)
    model.add_head("target", create_head(target.task, model.trunk.out_dim), target.task)
    model.remove_head("source")
    spec = TrainSpec(epochs=epochs, batch_size=32, lr=1e-3)
    trainer.fit(supervised_stage("target", model, target, spec, seed, head="target"))
    return evaluate(model, target.test, target.task, head="target")["accuracy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-epochs", type=int, default=15)
    parser.add_argument("--target-epochs", type=int, default=10,
                        help="fine-tuning epochs, the same for every trunk (default 10)")
    parser.add_argument("--target-per-class", type=int, default=15,
                        help="target training images per digit (default 15)")
    parser.add_argument("--seeds", type=int, default=5, help="fine-tuning seeds (default 5)")
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the shared machine is oversubscribed)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 source epochs, 5 target epochs, 1 seed, 20 resamples")
    args = parser.parse_args(argv)
    if args.quick:
        args.source_epochs, args.target_epochs, args.seeds, args.bootstrap = 3, 5, 1, 20

    t_start = time.perf_counter()
    fabric = make_fabric(Hardware(accelerator="cpu", threads=args.threads))
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, threads {torch.get_num_threads()}, "
          f"python {sys.version.split()[0]}")
    target = target_problem(args.target_per_class)
    print(f"target {target.name}: train {len(target.train)}, val {len(target.val)}, test "
          f"{len(target.test)}; zoo of {len(ZOO)} cnn2d trunks, source {args.source_epochs} ep, "
          f"fine-tuning {args.target_epochs} ep x {args.seeds} seeds")
    plain = source_problem("digit")
    pool = Split(torch.cat([plain.train.x, plain.val.x]), torch.cat([plain.train.y, plain.val.y]))
    target_all = Split(torch.cat([s.x for s in target.splits().values()]),
                       torch.cat([s.y for s in target.splits().values()]))
    print(f"target images also in the source pool (exact duplicates in digits): "
          f"{overlap(target_all, pool)} of {len(target_all)}\n")

    with tempfile.TemporaryDirectory(prefix="tlroutes-zoo-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        zoo = {name: pretrain(name, root, fabric, args.source_epochs) for name in ZOO}
        t_pre = time.perf_counter() - t0
        print(f"pretrained the zoo in {t_pre:.0f}s")

        t0 = time.perf_counter()
        heads = {name: m.heads["source"] for name, m in zoo.items()
                 if m.tasks["source"].kind == "classification" and name != "random"}
        evidence = rank_trunks({name: m.features for name, m in zoo.items()}, target,
                               source_heads=heads, bootstrap=args.bootstrap, seed=0)
        t_score = time.perf_counter() - t0
        print(f"scored in {t_score:.0f}s")

        t0 = time.perf_counter()
        accuracy: dict[str, list[float]] = {}
        for name, model in zoo.items():
            accuracy[name] = [
                fine_tune(model, target, root / f"ft-{name}-{seed}", fabric, seed,
                          args.target_epochs)
                for seed in range(args.seeds)]
        t_ft = time.perf_counter() - t0
        print(f"fine-tuned in {t_ft:.0f}s\n")

    scores = [s for s in SCORES if s in evidence.scores]
    mean_acc = {name: statistics.fmean(v) for name, v in accuracy.items()}
    header = f"| trunk | {' | '.join(scores)} | fine-tuned acc |"
    print(header)
    print("|---|" + "---:|" * (len(scores) + 1))
    for name in ZOO:
        cells = []
        for s in scores:
            e = evidence.scores[s].get(name)
            if e is None:
                cells.append("—")
            elif e.low is None or e.high is None:
                cells.append(f"{e.value:.3f} [no interval]")
            else:
                cells.append(f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}]")
        sd = statistics.stdev(accuracy[name]) if len(accuracy[name]) > 1 else 0.0
        print(f"| {name} | {' | '.join(cells)} | {mean_acc[name]:.3f} ± {sd:.3f} |")

    print("\n| score | trunks | Kendall τ vs fine-tuned acc | p-value | best by score | "
          "acc of that trunk |")
    print("|---|---:|---:|---:|---|---:|")
    for s in scores:
        names = [n for n in ZOO if n in evidence.scores[s]]
        tau, p = kendalltau([evidence.scores[s][n].value for n in names],
                            [mean_acc[n] for n in names])
        best = evidence.best(s)
        print(f"| {s} | {len(names)} | {tau:+.2f} | {p:.3f} | {best} | {mean_acc[best]:.3f} |")
    best_ft = max(mean_acc, key=mean_acc.get)
    print(f"\nbest by fine-tuning: {best_ft} ({mean_acc[best_ft]:.3f})")
    print("per-seed fine-tuned accuracies: " + "; ".join(
        f"{n} {', '.join(f'{a:.3f}' for a in accuracy[n])}" for n in ZOO))
    print("\nrank_trunks warnings:" + ("".join(f"\n  - {w}" for w in evidence.warnings)
                                       or " none"))
    print("rank_trunks notes:" + ("".join(f"\n  - {w}" for w in evidence.notes) or " none"))
    print(f"\ntotal {time.perf_counter() - t_start:.0f}s (pretraining {t_pre:.0f}s, scores "
          f"{t_score:.0f}s, fine-tuning {t_ft:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
