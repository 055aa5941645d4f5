"""The commands that use what a run trained: ``predict``, ``export`` and ``manifest``.

Registered on the ``tlroutes`` app by :mod:`tlroutes.cli`; the work is done by
:mod:`tlroutes.use`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tlroutes.errors import ConfigError

console = Console(soft_wrap=True)

RunDir = Annotated[Path, typer.Argument(help="A run folder `tlroutes run` wrote.")]
Job = Annotated[str | None, typer.Option(help="Parallel Training: the job whose model to use.")]
Seed = Annotated[int | None, typer.Option(help="A multi-seed run: the seed whose model to use "
                                               "(default: the first).")]


def predict(
    run_dir: RunDir,
    data: Annotated[str | None, typer.Argument(
        help="New data: a table (CSV/TSV/Parquet, the model's feature columns), an .npz archive "
             "(its x), an image file or a folder of images.")] = None,
    out: Annotated[Path, typer.Option(help="The CSV to write.")] = Path("predictions.csv"),
    split: Annotated[str | None, typer.Option(
        help="Instead of DATA: a split of the run's own data (train, val or test), loaded as "
             "the run loaded it; its metrics are printed.")] = None,
    head: Annotated[str | None, typer.Option(
        help="Multi-Task Learning: the head (task) to predict. Default: every head.")] = None,
    job: Job = None,
    seed: Seed = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Samples per forward pass.")] = None,
) -> None:
    """Predict with a run's trained model: labels and per-class probabilities (p_<class>), or
    values for regression, one row per sample, written as CSV."""
    from tlroutes.use import load

    if (data is None) == (split is None):
        raise ConfigError("Give the data to predict on (DATA) or --split train|val|test, "
                          "not both and not neither.")
    predictor = load(run_dir, job=job, seed=seed)
    if split is not None:
        from tlroutes.objectives.tasks import task_metrics

        name = predictor._head(head)  # one head: a split belongs to one head's problem
        part = predictor.split(split, name)
        frame = predictor.predict_frame(part, name, batch_size=batch_size)
        logits = predictor.outputs(part, name, batch_size=batch_size)
        metrics = task_metrics(predictor.tasks[name], logits, part.y)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        console.print(f"{split} split of head '{escape(name)}': {escape(shown)}")
    else:
        frame = predictor.predict_frame(data, head, batch_size=batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    console.print(f"predictions: {len(frame)} rows → {escape(str(out))}")


def export(
    run_dir: RunDir,
    format: Annotated[str, typer.Option(
        "--format", help="onnx, torchscript or safetensors.")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        help="The file to write. Default: model.<onnx|pt|safetensors> in the run folder's "
             "export/.")] = None,
    head: Annotated[str | None, typer.Option(
        help="Multi-Task Learning: the head to export. Default: the only head.")] = None,
    job: Job = None,
    seed: Seed = None,
) -> None:
    """Export a run's trained model (LoRA merged): the graph takes the preprocessed input
    tensor and returns the head's raw outputs (logits, or values for regression)."""
    from tlroutes.use import load
    from tlroutes.use.export import export_model

    predictor = load(run_dir, job=job, seed=seed)
    path = export_model(predictor, format=format, out=out, head=head)
    console.print(f"exported ({format}): {escape(str(path))}")


def manifest(run_dir: RunDir) -> None:
    """Write the manifest of a run made before manifests: the run is resumed from its finished
    checkpoints (nothing is trained again) and the manifest is written beside the weights."""
    from tlroutes.manifest import MANIFEST_FILE
    from tlroutes.runner import run

    saved = run_dir / "run.yaml"
    if not saved.is_file():
        raise ConfigError(f"{run_dir} holds no run.yaml, so its model cannot be described; "
                          "train it again with `tlroutes run`.")
    run(saved, run_dir, resume=True, progress=False)
    written = sorted(run_dir.rglob(MANIFEST_FILE))
    console.print(f"manifest: {', '.join(escape(str(p)) for p in written)}")
