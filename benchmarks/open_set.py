"""Open-set Domain Adaptation: OSBP against source support, over seeds and problems.

What is measured
----------------
The open-set variant of the Domain Adaptation route (``recipe.variant: open_set``), run by the
runner from a run file built here, with each ``variant_args.method``:

* ``osbp`` — OSBP (Saito et al., ECCV 2018), the paper's t = 0.5 and reversal coefficient 1;
* ``support`` — source support: a small non-adversarial domain classifier marks target samples
  with no source density (estimated P(source) < 1/4) unknown, the head learns them as unknown,
  and DANN aligns only the others (``tlroutes.routes.da_variants.open_set``).

Both keep the last epoch and read no target label. Reported per seed: the unknown class's
recall, OS* (mean recall of the known classes), OS (the same mean with unknown) and the OS gain
over the source-only model of the same run.

Problems (``--problem``, repeatable; default all):

* ``planted``: the known-answer test's problem (``tests/test_da_variants.py``): three known
  classes on a circle (radius 3, unit noise, 10 dimensions), the target shifted by 0.5 in seven
  dimensions plus class "new" (a quarter of the target) 12 away along a dimension no known class
  uses; ``mlp`` trunk 32 x 1, AdamW lr 0.01, 20 + 20 epochs, batch 64;
* ``planted_near``: the same with the new class 6 away (not 12);
* ``planted_shift``: the same with the known classes shifted by 1.0 (not 0.5);
* ``digits``: scikit-learn's 8x8 digits, source classes 0-5 upright, target all ten classes
  rotated by 40 degrees (6-9 are the unknown class, 40% of the target); ``cnn2d`` trunk,
  10 + 10 epochs, lr 3e-3 then 1e-3, batch 64.

Usage::

    python benchmarks/open_set.py                          # all problems, seeds 0-2
    python benchmarks/open_set.py --problem digits --seeds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tlroutes.config import parse_run
from tlroutes.runner import run

METHODS = ("osbp", "support")
PROBLEMS = ("planted", "planted_near", "planted_shift", "digits")


def planted(rng: np.random.Generator, n: int, classes: list[int], shift: float, far: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """The known-answer test's data (see the module docstring)."""
    means = np.zeros((4, 10))
    angle = 2 * np.pi * np.arange(3) / 3
    means[:3, 0], means[:3, 1] = 3 * np.cos(angle), 3 * np.sin(angle)
    means[3, 2] = far
    y = rng.choice(classes, size=n)
    x = means[y] + rng.normal(size=(n, 10))
    x[:, 3:] += shift
    return x.astype(np.float32), y


def planted_files(folder: Path, far: float, shift: float) -> tuple[str, str]:
    """The source and target ``.npz`` files of a planted problem (data seed 0)."""
    rng = np.random.default_rng(0)
    paths = []
    for name, classes, moved, labels in (("source", [0, 1, 2], 0.0, ["a", "b", "c"]),
                                         ("target", [0, 1, 2, 3], shift, ["a", "b", "c", "new"])):
        splits = [planted(rng, n, classes, moved, far) for n in (500, 200, 500)]
        arrays = {}
        for split, (x, y) in zip(("train", "val", "test"), splits, strict=True):
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        path = folder / f"{name}.npz"
        np.savez(path, labels=np.array(labels), **arrays)
        paths.append(str(path))
    return paths[0], paths[1]


def run_file(problem: str, method: str, seed: int, folder: Path) -> dict[str, Any]:
    """The run file of ``method`` on ``problem`` at ``seed``."""
    recipe = {"variant": "open_set", "variant_args": {"method": method}}
    common = {"route": "domain_adaptation", "seed": seed, "recipe": recipe,
              "hardware": {"accelerator": "cpu", "threads": 1}}
    if problem == "digits":
        return {**common, "model": {"trunk": "cnn2d"},
                "source": {"dataset": "digits", "task": "digit", "classes": list(range(6))},
                "target": {"dataset": "digits", "task": "digit", "shift": {"rotation": 40.0}},
                "source_training": {"epochs": 10, "lr": 3e-3, "batch_size": 64},
                "target_training": {"epochs": 10, "lr": 1e-3, "batch_size": 64}}
    far = 6.0 if problem == "planted_near" else 12.0
    shift = 1.0 if problem == "planted_shift" else 0.5
    source, target = planted_files(folder, far, shift)
    return {**common, "model": {"trunk": "mlp", "trunk_args": {"width": 32, "depth": 1}},
            "source": {"dataset": source, "domain": "upright"},
            "target": {"dataset": target, "domain": "shifted"},
            "source_training": {"epochs": 20, "batch_size": 64, "lr": 0.01},
            "target_training": {"epochs": 20, "batch_size": 64, "lr": 0.01}}


def one(problem: str, method: str, seed: int) -> dict[str, float]:
    """Unknown recall, OS*, OS and the OS gain of one run."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        summary = run(parse_run(run_file(problem, method, seed, folder), source="benchmark"),
                      folder / "run", progress=False)
        s = summary.to_dict() if hasattr(summary, "to_dict") else summary
    m = s["metrics"]
    return {"recall": m.get("unknown_recall", float("nan")), "os_star": m["os_star"],
            "os": m["os"], "gain": s["gain"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", action="append", choices=PROBLEMS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    args = parser.parse_args()
    print(f"{'problem':<14} {'method':<8} {'unknown recall':<30} {'OS*':<30} "
          f"{'OS mean ± sd':<14} OS gain mean ± sd")
    for problem in args.problem or PROBLEMS:
        for method in args.methods:
            runs = [one(problem, method, s) for s in range(args.seeds)]

            def row(key: str, runs: list[dict[str, float]] = runs) -> str:
                return " ".join(f"{r[key]:.2f}" for r in runs)

            def stat(key: str, runs: list[dict[str, float]] = runs) -> str:
                values = [r[key] for r in runs]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                sign = "+" if key == "gain" else ""
                return f"{statistics.mean(values):{sign}.3f} ± {sd:.3f}"

            print(f"{problem:<14} {method:<8} {row('recall'):<30} {row('os_star'):<30} "
                  f"{stat('os'):<14} {stat('gain')}", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
