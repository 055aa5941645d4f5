"""Run files: YAML, validated, every field documented with its default.

A run file names a route, the problems it joins and how to train. Unknown keys are errors that
suggest the near miss; a wrong type names the field and what it expected. The resolved file (with
every default filled in) is saved in the run folder as ``run.yaml``.

Example::

    route: task_fine_tuning
    source: {dataset: digits, task: digit, classes: [0, 1, 2, 3, 4]}
    target: {dataset: digits, task: digit, classes: [5, 6, 7, 8, 9], n: 200}
    model: {trunk: cnn2d}
    source_training: {epochs: 5}
    target_training: {epochs: 5}
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tlroutes.errors import ConfigError, did_you_mean, shorten

# --------------------------------------------------------------------------------------------------
# Bounds: what the machine can hold. Every numeric field has an upper bound, so that no value can
# overflow an integer downstream or ask for terabytes; the ones that depend on the machine
# (memory, cores) are checked against it, with the reason in the message.
# --------------------------------------------------------------------------------------------------

#: The largest run file read, in bytes (1 MiB): run files are a few hundred bytes to a few KiB.
MAX_RUN_FILE_BYTES = 1 << 20
#: A run file's YAML aliases may expand it to at most this multiple of its own size (or
#: :data:`MIN_EXPANSION_BUDGET` characters, whichever is larger): enough to reuse a block a few
#: times, never a "billion laughs" document that expands 400 bytes into gigabytes.
MAX_EXPANSION = 10
#: The expansion budget of a small run file, in characters (64 KiB).
MIN_EXPANSION_BUDGET = 1 << 16
#: The deepest nesting of a run file's blocks (a run file nests four or five levels).
MAX_DEPTH = 32
#: Upper bounds of counts whose only limit is time, not memory.
MAX_EPOCHS = 100_000
MAX_STEPS = 1_000_000_000
MAX_SAMPLES = 100_000_000
#: The largest canvas side (pixels, or samples of a signal): 4096² float32 pixels are 64 MiB per
#: sample, already more than every sample of a built-in dataset together needs.
MAX_CANVAS = 4096
#: Seeds are stored and derived as 63-bit integers.
MAX_SEED = 2**63 - 1
#: Devices and machines of one run (Lightning's own limits are far below an int overflow).
MAX_DEVICES = 1024
MAX_NODES = 100_000
#: Data-loading worker processes per training process (each is a process with its own memory).
MAX_WORKERS = 64
#: The largest batch (indices are 32-bit integers in some kernels).
MAX_BATCH = 2**31 - 1
#: Bytes a batch needs per sample at the least (its index, its random draw, its label, a few
#: float32 input values): a floor, so batch_size is refused when even that cannot fit.
MIN_SAMPLE_BYTES = 64


def machine_memory() -> int:
    """Bytes of memory this machine has available now (``MemAvailable``), else its total."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX: no bound we can tell
        return 1 << 50


def machine_cores() -> int:
    """CPU cores this process may use (its affinity, where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def human_bytes(n: float) -> str:
    """``n`` bytes in words: ``'7.3 TB'``, ``'125.4 GB'``."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} EB"  # pragma: no cover


def check_memory(what: str, need: float, how: str, fix: str) -> None:
    """Raise :class:`ConfigError` when ``need`` bytes exceed this machine's available memory.

    Args:
        what: the setting, e.g. ``"canvas: 1000000"``.
        need: the bytes it needs.
        how: how ``need`` is counted, e.g. ``"1797 samples × 1000000² pixels × 4 bytes"``.
        fix: what to do instead, e.g. ``"use a canvas of at most 4096"``.
    """
    have = machine_memory()
    if need > have:
        raise ConfigError(f"{what} needs about {human_bytes(need)} of memory ({how}), more than "
                          f"the {human_bytes(have)} this machine has available; {fix}.")


class _Spec(BaseModel):
    # NaN and infinity are never a meaningful setting (a NaN lr, an infinite shift).
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class TransformSpec(_Spec):
    """Image transforms of one problem (``data.transforms``): how every image becomes a tensor,
    and the augmentations of training batches. Defaults come from the trunk
    (:class:`tlroutes.backbones.inputs.InputConfig`); see :mod:`tlroutes.data.transforms`."""

    size: int | tuple[int, int] | None = Field(
        None, description="Output side in pixels, or [height, width]. Default: the trunk's input "
        "size (224 for efficientnet_lite0), else the most common size among the images.",
    )
    resize: Literal["crop", "stretch"] = Field(
        "crop", description="'crop': resize the shorter side to size / crop_pct, then cut the "
        "centre (aspect kept); 'stretch': resize to exactly size (aspect not kept). "
        "Default 'crop'.",
    )
    crop_pct: float = Field(
        1.0, gt=0.0, le=1.0, description="With resize 'crop': the share of the resized image "
        "the centre crop keeps (timm's crop_pct, e.g. 0.875). Default 1.0 (no margin).",
    )
    interpolation: Literal["nearest", "bilinear", "bicubic"] | None = Field(
        None, description="How images are resized. Default: the trunk's, else 'bilinear'.",
    )
    mean: list[float] | None = Field(
        None, min_length=1, max_length=4, description="Per-channel mean of images scaled to "
        "[0, 1], subtracted after scaling. Default: the trunk's; ImageNet's for a pretrained "
        "3-channel trunk that declares none; else none (values stay in [0, 1]).",
    )
    std: list[float] | None = Field(
        None, min_length=1, max_length=4, description="Per-channel standard deviation, divided "
        "by after subtracting the mean (positive). Default: as mean.",
    )
    mode: Literal["auto", "RGB", "L"] = Field(
        "auto", description="Colour mode every image is converted to: 'RGB' (3 channels), 'L' "
        "(grey, 1 channel) or 'auto': the trunk's (RGB for a 3-channel trunk), else the mode "
        "most images have. Default 'auto'.",
    )
    train: list[str | dict[str, dict[str, Any] | None]] = Field(
        default_factory=list, max_length=32, description="Training-time augmentations, in "
        "order, each a name or {name: {parameter: value}}: random_resized_crop (scale, ratio), "
        "random_crop (padding, padding_mode), horizontal_flip (p), vertical_flip (p), rotation "
        "(degrees), color_jitter (brightness, contrast, saturation, hue), gaussian_blur "
        "(kernel_size, sigma), trivial_augment, rand_augment (num_ops, magnitude), "
        "random_erasing (p, scale). Default [] (training reads images as evaluation does).",
    )


class DataSpec(_Spec):
    """One problem's data."""

    dataset: str = Field(
        "digits",
        description="A built-in generator ('digits': scikit-learn's 8×8 digits; 'mnist1d': "
        "procedural 1-D signals) or a path: an .npz archive (x_train, y_train, x_val, y_val, "
        "x_test, y_test, or unsplit x and y; optional 'labels', the label names; y may be left "
        "out for an unlabelled target), a table (.csv, .tsv, .parquet; see label, features, "
        "text, split_column, domain_column), a folder saved by Hugging Face datasets' "
        "save_to_disk (a Dataset or a DatasetDict with train/validation/test splits), or images: "
        "a folder in the ImageFolder layout (<class>/<image>) or a .csv/.tsv with a 'path' "
        "column (and label, optional split and domain columns; see transforms). Data "
        "without pre-made splits is split by `split` (stratified, seeded) and the lists are kept "
        "in the run folder. A relative path is read from the current folder, else from the run "
        "file's folder. 'python:<kind>-<key>' names data given to tlroutes.fit as a Python "
        "object (arrays, a DataFrame, a Dataset, a Problem), held by that process only. Default "
        "'digits'.",
    )
    task: str = Field(
        "digit",
        description="Built-in data: the task variant — 'digit' (10 classes), 'parity', 'gt4' "
        "(greater than 4), 'properties' (multilabel: even, >4, prime, loop) or 'position' "
        "(regression: where the digit sits on a larger canvas). "
        "Files and folders: the task kind — 'classification', 'multilabel' or 'regression'; "
        "the default 'digit' there means 'read it from the labels': integers, strings and "
        "booleans are a classification, real-valued (float) targets an error asking for "
        "'regression'. Default 'digit'.",
    )
    shift: dict[str, float] = Field(
        default_factory=dict,
        description="Built-in data: domain shifts, knob → strength. Images: rotation (degrees), "
        "inversion (1 = on), noise (Gaussian sigma), blur (sigma, pixels), scale (zoom factor). "
        "Signals: noise, shear, translation (the MNIST-1D generator's knobs). Default {} (none).",
    )
    classes: list[int | str] | None = Field(
        None, description="Keep only these classes, in this order (they are renumbered): "
        "built-in data: digits 0-9; files: label names, or integer ids into the labels. "
        "Default: all.",
    )
    canvas: int | None = Field(
        None, ge=1, le=MAX_CANVAS, description="Built-in data: paste every sample at a random "
        "place on a zero canvas of this size (images: side in pixels, at least 8; signals: "
        f"length, at least 40; at most {MAX_CANVAS}, and what fits in memory). Default: no "
        "canvas (16 / 80 for task 'position').",
    )
    n: int | None = Field(
        None, ge=3, le=MAX_SAMPLES, description="Keep this many samples before splitting (at "
        f"most {MAX_SAMPLES:,}). Default: all.",
    )
    split: tuple[float, float, float] = Field(
        (0.6, 0.2, 0.2), description="Train / validation / test fractions. Default 0.6/0.2/0.2."
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Seed for sampling, splitting and shifts (0 to "
        "2⁶³-1). Default: the run's seed.",
    )
    domain: str | None = Field(
        None, description="The domain's name. Problems whose domains share name, modality and "
        "sample shape are the same domain on the cube. Default: the dataset's name plus its "
        "shifts (so a shifted copy is a different domain).",
    )
    modality: Literal["image", "signal", "tabular", "text"] | None = Field(
        None, description=".npz data: the modality. Default: image for 3-D samples (C, H, W), "
        "signal for 2-D (C, L), tabular for 1-D.",
    )
    label: str | None = Field(
        None, description="Tables and datasets folders: the label (target) column. Default: "
        "the column named 'label' when there is one, else an error listing the columns.",
    )
    labels: list[str] | None = Field(
        None, min_length=2, description="Files: the class names in id order. String labels are "
        "matched by name (a label not in the list is an error naming it); integer labels are "
        "ids into the list. Default: the sorted distinct labels found (an .npz archive's own "
        "'labels' array when it has one).",
    )
    features: list[str] | None = Field(
        None, min_length=1, description="Tables and datasets folders: the numeric input columns, "
        "in this order. Default: every column but the label, text, split and domain columns.",
    )
    text: str | None = Field(
        None, description="Tables and datasets folders: a text column, tokenised by the trunk's "
        "tokenizer (trunk minilm_l6, or an 'hf:' text model) into text_length token ids; the "
        "problem is then a text "
        "problem. Default: none.",
    )
    text_length: int = Field(
        64, ge=2, le=4096, description="Token ids per text (truncated or padded). Default 64.",
    )
    split_column: str | None = Field(
        None, description="Tables, image lists and datasets folders: a column holding each "
        "row's split ('train', 'val' or 'validation', 'test'); rows keep those splits instead "
        "of automatic ones. Default: the column named 'split' when the table has one, else none "
        "(split automatically by `split`).",
    )
    domain_column: str | None = Field(
        None, description="Tables, image lists and datasets folders: a column naming each "
        "row's domain (a site, an island, a scanner), so that one table holds several domains; "
        "with domain_value, this problem takes the rows of one domain (a column of one value "
        "needs none). The column is never a feature. (Not `domain:`, which names this "
        "problem's domain.) Default: the column named 'domain' when the table has one, else "
        "none.",
    )
    domain_value: str | int | None = Field(
        None, description="With domain_column: the value whose rows are this problem (e.g. "
        "source rows 'site A', target rows 'site B'); it is also the domain's name unless "
        "`domain` is given. Default: none (then domain_column is an error listing its values).",
    )
    transforms: TransformSpec = Field(
        default_factory=TransformSpec, description="Image data: per-split transforms and "
        "training augmentations (see TransformSpec). Default: the trunk's input size and "
        "statistics, no augmentation.",
    )
    on_bad_file: Literal["error", "skip"] = Field(
        "error", description="Image data: a file that is not a readable image stops loading "
        "with its name ('error'), or is left out, counted and listed in a warning ('skip'). "
        "Default 'error'.",
    )
    # The run's model.trunk, set by RunSpec (not a run-file key), so that image transforms take
    # their defaults from the trunk without every caller of load_problem passing it.
    _trunk: str | None = PrivateAttr(None)


class ModelSpec(_Spec):
    """The network: stems → trunk → heads."""

    trunk: str = Field(
        "cnn2d", description="The trunk: built in ('mlp', 'cnn2d', 'cnn1d', 'transformer', "
        "'efficientnet_lite0', 'minilm_l6') or named by origin: 'timm:<model>' (a timm model; its "
        "input size and statistics set the image transforms), 'hf:<folder or hub id>' (a "
        "transformers vision model with its image processor, or a text model with its "
        "tokenizer; local files and the local Hugging Face cache, the hub only with "
        "trunk_args.download), 'module:<package.module:factory>' (any nn.Module factory) or a "
        "plug-in's 'tlroutes.trunks' entry point. The feature width is read from the model. "
        "Default 'cnn2d'.",
    )
    trunk_args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the trunk (e.g. width, depth). "
        "Default {} (the trunk's own defaults).",
    )
    stem: str = Field(
        "auto", description="Input adapter; 'auto' (default) picks the one that fits the "
        "domain's modality and the trunk.",
    )
    stem_args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the stem. Default {}."
    )
    weights: str | None = Field(
        None, description="A safetensors (or weights-only torch) file of trunk weights to start "
        "from; mismatched keys are named. Default: none (the trunk's own initialisation, which "
        "for a pretrained trunk such as efficientnet_lite0 is its pretrained weights).",
    )


class TrainSpec(_Spec):
    """How one stage trains.

    A stage's length is given one way: ``epochs`` (passes over the training data, the default)
    or ``steps`` (optimizer steps, whatever the data's size); giving both is an error.
    """

    epochs: int | None = Field(
        None, ge=1, le=MAX_EPOCHS, description="The stage's length in passes over the training "
        f"data (over its longest stream; at most {MAX_EPOCHS:,}). Default 10 when `steps` is "
        "not given; give epochs or steps, not both.")
    steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="The stage's length in optimizer steps, for data "
        "of any size (the learning-rate schedule spans them). Default: none (`epochs` sets the "
        "length).")
    val_every_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Validate — select the best weights, count "
        "patience and checkpoint — every this many steps, and at the end. Default: once per "
        "epoch (one pass over the longest training stream).")
    batch_size: int = Field(
        64, ge=1, description="Samples per step from EACH training stream, over all processes "
        "(a data-parallel run splits them). A stage with several streams draws batch_size from "
        "each: Domain Adaptation's 64 is 64 source + 64 unlabelled target samples (+ 64 labelled "
        "target ones when given) per step; Multi-Task Learning's 64 come from each set of task "
        "inputs (tasks over one set of inputs share a stream); a single stream, or Dataset "
        "Merging's mixed one, draws 64 in all. At most what fits in memory. Default 64.")
    lr: float = Field(1e-3, gt=0, description="Base learning rate. Default 1e-3.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay. Default 0.")
    optimizer: Literal["adamw", "adam", "sgd"] = Field(
        "adamw", description="'adamw' (default), 'adam' or 'sgd' (momentum 0.9)."
    )
    scheduler: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning-rate schedule: 'cosine' (default) or 'constant'."
    )
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Linear warm-up steps. "
                              "Default 0.")
    patience: int | None = Field(
        None, ge=1, le=MAX_EPOCHS, description="Early stopping: validations (epochs, or rounds "
        "of val_every_steps) without improvement before stopping. Default: never stop early.",
    )
    grad_clip: float | None = Field(
        None, gt=0, description="Clip the gradient norm to this value. Default: no clipping."
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_fits(cls, value: int) -> int:
        # The exact cost depends on the data (checked where a batch is drawn); this floor refuses
        # at once a batch that could not fit even with the smallest samples.
        check_memory(f"batch_size: {value}", value * MIN_SAMPLE_BYTES,
                     f"at least {MIN_SAMPLE_BYTES} bytes per sample: its index, label and input",
                     "lower batch_size")
        if value > MAX_BATCH:
            raise ValueError(f"batch_size must be at most {MAX_BATCH:,}: batch indices are "
                             "32-bit integers in some kernels")
        return value

    @model_validator(mode="after")
    def _one_length(self) -> TrainSpec:
        # One meaning for a stage's length: steps when given, else epochs (default 10).
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"give the stage's length as epochs ({self.epochs}) or as steps "
                             f"({self.steps}), not both")
        if self.steps is None and self.epochs is None:
            self.epochs = 10
        return self

    def total_steps(self, steps_per_epoch: int) -> int:
        """The stage's optimizer steps, given how many steps one epoch takes."""
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch

    def length(self) -> str:
        """The stage's length in words: ``'5 epochs'`` or ``'2,000 steps'``."""
        return f"{self.steps:,} steps" if self.steps is not None else f"{self.epochs} epochs"


@dataclass
class Hardware:
    """Where and how a run trains: what :meth:`HardwareSpec.build` gives the training engine.

    Plain values (no Fabric): :func:`tlroutes.train.hardware.make_fabric` launches them.

    Args:
        accelerator: ``"auto"`` (a GPU when present, else CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
        devices: number of devices (processes) on this machine. Default 1.
        num_nodes: number of machines. Default 1.
        precision: ``"32-true"`` (default), ``"64-true"``, ``"bf16-mixed"``, ``"16-mixed"``,
            ``"bf16-true"``; training and evaluation alike (see
            :mod:`tlroutes.train.precision`: what each device runs, what is refused).
        threads: CPU threads per process; None (default) divides the machine's cores among the
            processes on it, so that two processes on two cores do not oversubscribe them, at
            most ``OMP_NUM_THREADS`` where that is set.
        workers: data-loading worker processes per training process, for lazily read data;
            None (default) is ``min(4, cores - 1)`` (see :mod:`tlroutes.train.loading`).
        eval_batch_size: samples per evaluation forward pass; None (default) sizes it to
            memory (see :func:`tlroutes.train.loading.eval_batch_size`).
    """

    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"
    threads: int | None = None
    workers: int | None = None
    eval_batch_size: int | None = None

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.devices * self.num_nodes > 1


class HardwareSpec(_Spec):
    """Where the run trains (see :class:`Hardware`)."""

    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = Field(
        "auto", description="'auto' (default: a GPU when present), 'cpu', 'cuda', 'mps'."
    )
    devices: int = Field(1, ge=1, le=MAX_DEVICES, description="Processes (devices) on this "
                         "machine. Default 1.")
    num_nodes: int = Field(1, ge=1, le=MAX_NODES, description="Machines. Default 1.")
    precision: Literal["32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true"] = Field(
        "32-true", description="Numeric precision of training and of evaluation (validation, "
        "test, prediction): '32-true' (default); '64-true' and 'bf16-true' train, save and "
        "predict with the weights in float64 or bfloat16; 'bf16-mixed' and '16-mixed' keep "
        "float32 weights and run every forward pass under autocast (float16 with loss "
        "scaling). The CPU runs all five; refused before training: '64-true' on Apple MPS, "
        "'bf16-*' on GPUs older than Ampere, '16-mixed' in Multi-Task Learning (its "
        "weighting makes gradients past the loss scaler; use 'bf16-mixed').",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads per process, at most the machine's cores. "
        "Default: cores ÷ processes, at most OMP_NUM_THREADS where that is set.",
    )
    workers: int | None = Field(
        None, ge=0, le=MAX_WORKERS, description="Data-loading worker processes (per training "
        "process) that read and transform lazily held data (image folders, large tables) ahead "
        "of the training step; 0 reads in the training process. In-memory data needs none. "
        "Default: min(4, cores - 1).",
    )
    eval_batch_size: int | None = Field(
        None, ge=1, le=MAX_BATCH, description="Samples per evaluation forward pass. Default: "
        "sized to memory — at most 64 MiB of inputs per batch (1/32 of the available memory on "
        "a small machine), at most 1,024 samples: 111 images of 3×224×224, 1,024 8×8 digits.",
    )

    @field_validator("threads")
    @classmethod
    def _threads_fit(cls, value: int | None) -> int | None:
        # More threads than cores only makes them wait for each other (and a huge count
        # overflows the C int torch.set_num_threads takes).
        cores = machine_cores()
        if value is not None and value > cores:
            raise ValueError(f"threads per process must be at most this machine's {cores} CPU "
                             "core(s): more threads than cores only wait for each other")
        return value

    def build(self) -> Hardware:
        """The engine's :class:`Hardware` for this spec."""
        return Hardware(**self.model_dump())


class MlflowSpec(_Spec):
    """Log the run to MLflow (needs the extra: ``pip install "tlroutes[mlflow]"``)."""

    tracking_uri: str | None = Field(
        None, description="Where MLflow stores runs: a database URI such as "
        "'sqlite:///mlflow.db' (a SQLite file, path relative to the current directory; four "
        "slashes for an absolute path) or a tracking server's http(s):// address. Default: the "
        "MLFLOW_TRACKING_URI environment variable when set, else 'sqlite:///mlflow.db' in the "
        "current directory (view it with `mlflow ui --backend-store-uri sqlite:///mlflow.db`).",
    )
    experiment: str = Field(
        "tlroutes", min_length=1, description="The MLflow experiment the run goes to; created "
        "when missing. Default 'tlroutes'.",
    )
    run_name: str | None = Field(
        None, description="The MLflow run's name. Default: the run folder's name.",
    )
    artifacts: bool = Field(
        True, description="At the end, upload summary.json, run.yaml, metrics.jsonl and the "
        "report (report.html, report.md, report_files/) when present. Default true.",
    )
    artifact_location: str | None = Field(
        None, description="Where a NEW experiment keeps its artifacts (a folder or URI); an "
        "existing experiment keeps its own. Default: MLflow's own choice (for a local database, "
        "the folder mlruns/ in the current directory).",
    )


class TrackingSpec(_Spec):
    """Experiment tracking. metrics.jsonl in the run folder is always written; these add more.

    Every finished epoch of every stage becomes scalars named ``<stage>/<metric>`` (e.g.
    ``target/val_accuracy``, ``source/train_loss``, ``baseline/lr``) at a global step that counts
    epochs over the whole run and keeps counting across a resume.
    """

    tensorboard: bool = Field(
        False, description="Write TensorBoard event files to <run folder>/tensorboard/ (needs "
        "the extra: pip install \"tlroutes[tensorboard]\"). Default false.",
    )
    mlflow: MlflowSpec | None = Field(
        None, description="Log parameters (the resolved run file, flattened), metrics and "
        "artifacts to MLflow; `mlflow: {}` or `mlflow: true` takes every default. A resumed run "
        "continues the same MLflow run. Default: none (no MLflow).",
    )

    @field_validator("mlflow", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `mlflow: true` reads naturally in a run file; it means every default.
        if value is True:
            return {}
        if value is False:
            return None
        return value


class ConstraintSpec(_Spec):
    """What the project must live with; ``tlroutes plan`` infers the order from it."""

    source_data: bool = Field(
        True, description="The source problem's data is available. false: only a pretrained "
        "model is (the order must be sequential). Default true.",
    )
    one_model: bool = Field(
        False, description="One model must serve both problems in the end (the order must be "
        "simultaneous). Default false.",
    )


class RunSpec(_Spec):
    """A whole run: the route, the two problems, the model and how each stage trains."""

    route: str = Field(
        ..., description="The route: one of the eight ids or titles, e.g. 'task_fine_tuning' "
        "or 'Task Fine-Tuning' (`tlroutes routes` lists them), or 'auto': `tlroutes plan` "
        "measures the data and picks it.",
    )
    order: Literal["sequential", "simultaneous"] | None = Field(
        None, description="For route 'auto': 'sequential' or 'simultaneous'. Default: from the "
        "constraints, else from the run file's shape (problems: → simultaneous).",
    )
    constraints: ConstraintSpec = Field(
        default_factory=ConstraintSpec, description="What the project must live with "
        "(source data available? one model for both?). Default: source data available, no "
        "single-model requirement.",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED - 100, description="The run's seed (0 to "
                      "2⁶³-101); every stage derives its own. Default 0.")
    seeds: int = Field(
        1, ge=1, le=100, description="Repeat the whole run with seeds seed, seed+1, …, and "
        "report the mean and spread of metrics, baseline and gain. Default 1.",
    )
    source: DataSpec | None = Field(
        default_factory=DataSpec, description="The problem knowledge comes from. null: the "
        "pretrained trunk (model.trunk or model.weights) is the source, and no source stage "
        "runs. Default: built-in digits.",
    )
    target: DataSpec = Field(
        default_factory=DataSpec, description="The problem knowledge goes to."
    )
    problems: dict[str, DataSpec] = Field(
        default_factory=dict, description="Simultaneous routes (Dataset Merging, Weight "
        "Sharing, Multi-Task Learning): the problems learned at once, by name. Sequential "
        "routes use source and target instead. Default {}.",
    )
    importance: dict[str, Literal["main", "auxiliary"]] = Field(
        default_factory=dict, description="Multi-Task Learning: which problem is the main task "
        "and which are auxiliary, there only to help it, e.g. {digit: main} (problems not "
        "listed are auxiliary once a main task is named). With a main task, selection, the "
        "reported metric and the baseline are the main task's alone. Default {}: every task "
        "equally important.",
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="The network.")
    source_training: TrainSpec = Field(
        default_factory=TrainSpec, description="Training on the source problem."
    )
    target_training: TrainSpec = Field(
        default_factory=TrainSpec, description="Training on the target problem; the "
        "from-scratch baseline gets the same budget.",
    )
    training: TrainSpec = Field(
        default_factory=TrainSpec, description="Simultaneous routes: the joint stage; each "
        "separate single-problem baseline gets the same epochs and batch size.",
    )
    baseline: bool = Field(
        True, description="Also train the same model from scratch on the target with the "
        "target's budget, and report the gain against it. Default true.",
    )
    recipe: dict[str, Any] = Field(
        default_factory=dict, description="The route's own settings (method, schedule, "
        "regulariser …); each route documents its fields. Default {} (the route's defaults).",
    )
    hardware: HardwareSpec = Field(default_factory=HardwareSpec, description="Devices.")
    tracking: TrackingSpec = Field(
        default_factory=TrackingSpec, description="Experiment tracking: TensorBoard and MLflow, "
        "besides metrics.jsonl. Default: metrics.jsonl only.",
    )

    @model_validator(mode="after")
    def _one_main_task(self) -> RunSpec:
        check_importance(self.importance, list(self.problems))
        return self

    @property
    def main_task(self) -> str | None:
        """The problem ``importance:`` marks ``main``, or None (all tasks equally important)."""
        return next((n for n, v in self.importance.items() if v == "main"), None)

    @model_validator(mode="after")
    def _tell_data_the_trunk(self) -> RunSpec:
        for block in (self.source, self.target, *self.problems.values()):
            if block is not None:
                block._trunk = self.model.trunk
        return self


def check_importance(importance: Mapping[str, str], problems: list[str]) -> None:
    """Raise :class:`ConfigError` unless ``importance`` marks one main task among ``problems``.

    Args:
        importance: the run file's ``importance:`` (problem name → ``main`` | ``auxiliary``).
        problems: the names under ``problems:`` (empty for a sequential run).
    """
    if not importance:
        return
    if not problems:
        raise ConfigError(
            "importance: marks tasks learned at once (the problems: of a simultaneous run). In "
            "a sequential run the target is the main task by construction and the source only "
            "serves it, so there is nothing to mark: remove importance:, or give problems: "
            "with route: multi_task_learning.")
    unknown = [n for n in importance if n not in problems]
    if unknown:
        raise ConfigError(
            f"importance: names {', '.join(repr(n) for n in unknown)}, which "
            f"{'is' if len(unknown) == 1 else 'are'} not under problems: (its problems: "
            f"{', '.join(problems)}).{did_you_mean(unknown[0], problems)}")
    mains = [n for n, v in importance.items() if v == "main"]
    if len(mains) > 1:
        raise ConfigError(
            f"importance: marks {len(mains)} main tasks ({', '.join(mains)}); auxiliary "
            "tasks serve one main task. Mark one main and the others auxiliary, or remove "
            "importance: when the tasks are equally important.")
    if not mains:
        raise ConfigError(
            "importance: marks auxiliary tasks but no main task for them to serve: mark one "
            "problem main, e.g. importance: {" + problems[0] + ": main}.")


def load_run_file(path: str | Path) -> RunSpec:
    """Read and validate a run file; every problem becomes one clear :class:`ConfigError`.

    The file is read within bounds (:func:`read_yaml`): at most :data:`MAX_RUN_FILE_BYTES`, with
    its aliases' expansion and its nesting bounded.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Run file {shorten(str(path))} does not exist. `tlroutes run` needs a "
                          "YAML file; see examples/ for ones to copy.")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{shorten(str(path))} must hold a mapping of fields (route:, "
                          "source:, ...).")
    return beside_run_file(parse_run(data, source=shorten(str(path))), path.parent)


def beside_run_file(spec: RunSpec, folder: Path) -> RunSpec:
    """``spec`` with each data block's relative ``dataset`` path that is missing from the current
    folder but present in the run file's ``folder`` made absolute there.

    A relative path is read from the current folder first (as typed on the command line), then
    from the run file's folder: so a run file and its data travel together — the packaged
    examples find their data (``examples/data/…``) wherever tlroutes is installed.
    """
    def moved(block: DataSpec | None) -> DataSpec | None:
        if block is None:
            return None
        given = Path(block.dataset)
        if given.is_absolute() or given.exists() or not (folder / given).exists():
            return block
        return block.model_copy(update={"dataset": str((folder / given).resolve())})

    update: dict[str, Any] = {"source": moved(spec.source), "target": moved(spec.target)}
    if spec.problems:
        update["problems"] = {name: moved(block) for name, block in spec.problems.items()}
    return spec.model_copy(update=update)


def read_yaml(path: str | Path, max_bytes: int = MAX_RUN_FILE_BYTES) -> Any:
    """A YAML file's content, read safely and within bounds.

    Safe: PyYAML's ``SafeLoader`` (plain data only, no Python objects). Bounded: a file larger
    than ``max_bytes`` (default :data:`MAX_RUN_FILE_BYTES`), not UTF-8, nested deeper than
    :data:`MAX_DEPTH`, or whose aliases expand it beyond :data:`MAX_EXPANSION` times its size is
    refused before anything is built from it, so that a small file cannot take the machine.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or breaks a bound (the message says
            which, and how large it is).
    """
    path = Path(path)
    where = shorten(str(path))
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(f"{where} is {size:,} bytes; a run file may be at most "
                              f"{max_bytes:,} bytes.")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start}); a run "
                          "file is YAML text.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {where}: {exc.strerror or exc}.") from None
    return parse_yaml(text, where)


def parse_yaml(text: str, where: str = "run file") -> Any:
    """YAML ``text`` as plain data, within the bounds of :func:`read_yaml` (``where`` names it
    in messages)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Measured on the node graph, where an alias is one shared node: nothing is expanded.
        budget = max(MIN_EXPANSION_BUDGET, MAX_EXPANSION * len(text))
        _ExpansionMeter(budget, where).measure(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {shorten(str(exc), 400)}") from None
    except RecursionError:
        raise ConfigError(f"{where} nests its blocks too deeply to read (a run file nests "
                          f"at most {MAX_DEPTH} levels).") from None
    finally:
        loader.dispose()


class _ExpansionMeter:
    """The size a YAML node graph has once every alias is expanded, in characters, measured
    without expanding it: each node's size is computed once and reused wherever it is aliased.

    Raises :class:`ConfigError` as soon as the size passes ``budget``, the nesting passes
    :data:`MAX_DEPTH`, or an alias refers to a block that contains it (a cycle).
    """

    def __init__(self, budget: int, where: str) -> None:
        self.budget, self.where = budget, where
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()

    def measure(self, node: yaml.Node, depth: int = 0) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise ConfigError(f"{self.where}: an alias refers to the block that contains it; a "
                              "run file must be a tree.")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{self.where} nests its blocks more than {MAX_DEPTH} levels "
                              "deep; a run file nests four or five.")
        self.open.add(key)
        if isinstance(node, yaml.ScalarNode):
            size = len(node.value) + 1
        elif isinstance(node, yaml.SequenceNode):
            size = 2 + sum(self.measure(child, depth + 1) for child in node.value)
        else:  # a mapping: keys and values
            size = 2 + sum(self.measure(k, depth + 1) + self.measure(v, depth + 1)
                           for k, v in node.value)
        self.open.discard(key)
        if size > self.budget:
            raise ConfigError(
                f"{self.where}: its aliases (*name) expand it to more than {self.budget:,} "
                f"characters, over {MAX_EXPANSION} times its own size; a run file may reuse a "
                "block, not multiply it. Write the blocks out, or use fewer nested aliases.")
        self.sizes[key] = size
        return size


def parse_run(data: dict[str, Any], source: str = "run file") -> RunSpec:
    """Validate a run given as a dict (as read from YAML)."""
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, RunSpec, source)) from None


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per problem, naming the field path, what was wrong and the near miss."""
    lines = [f"{source} has {exc.error_count()} problem(s):"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # A key is the user's text too: a 10,000-character key is cut like any value.
        where = ".".join(shorten(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            fields = _fields_at(model, loc[:-1])
            lines.append(
                f"  - unknown key '{where}'.{did_you_mean(loc[-1], fields)} "
                f"Valid keys here: {', '.join(fields)}."
            )
        elif err["type"] == "missing":
            lines.append(f"  - '{where}' is required.")
        else:
            got = shorten(err.get("input"), quote=True)
            lines.append(f"  - '{where}': {shorten(err['msg'], 400)} (got {got}).")
    return "\n".join(lines)


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    parts = list(loc)
    while parts:
        field = model.model_fields.get(parts.pop(0))
        ann = getattr(field, "annotation", None)
        if get_origin(ann) is dict and parts:  # a mapping of specs, e.g. jobs: {name: JobSpec}
            ann = get_args(ann)[-1]
            parts.pop(0)
        # An optional spec (e.g. mlflow: MlflowSpec | None) lists the spec's own keys.
        specs = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if get_origin(ann) is not dict and len(specs) == 1:
            ann = specs[0]
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


#: Top-level blocks that apply to a run whatever its route (the route's name, how it is planned,
#: seeds, its own recipe, the hardware, tracking). A route module's ``RUN_FILE_BLOCKS`` names the
#: others it reads (see :mod:`tlroutes.routes.registry`).
COMMON_BLOCKS: frozenset[str] = frozenset(
    {"route", "order", "constraints", "seed", "seeds", "recipe", "hardware", "tracking"})


def check_blocks(spec: RunSpec, blocks: frozenset[str] | None, title: str) -> None:
    """Refuse a top-level block that the run's route would ignore.

    A block counts when the run file gives it *and* it differs from its default: a run file
    saved by ``tlroutes run`` (``run.yaml``, every block written out with its default) still
    resolves, while a Task Fine-Tuning file with a ``training:`` block of its own is refused
    instead of running with defaults the user did not ask for.

    Args:
        spec: the run.
        blocks: the blocks the route reads besides :data:`COMMON_BLOCKS`; None (a plug-in
            route that does not say) checks nothing.
        title: the route's display name, for the message.

    Raises:
        ConfigError: naming each ignored block, the route, and the blocks it reads.
    """
    if blocks is None:
        return
    defaults = RunSpec(route=spec.route)
    # public values only: a data block's private trunk hint follows model.trunk, so a
    # non-default trunk would make an untouched source:/target: look set
    ignored = sorted(k for k in spec.model_fields_set - COMMON_BLOCKS - set(blocks)
                     if spec.model_dump(include={k}) != defaults.model_dump(include={k}))
    if ignored:
        reads = ", ".join(sorted(set(blocks))) or "none besides recipe"
        names = ", ".join(f"'{k}:'" for k in ignored)
        raise ConfigError(
            f"{title} does not read the run file's {names} block(s), so their settings would be "
            f"silently ignored. Remove them, or move the settings to a block {title} reads "
            f"({reads}; and recipe, hardware, tracking, seed, seeds).")


def iter_specs(obj: Any, kind: type[BaseModel]) -> Iterator[Any]:
    """Every ``kind`` instance inside ``obj`` (nested specs, dicts, lists, tuples), in order.

    The runner uses it to check every data and model block of a run, wherever a route keeps
    them (the top level, or a recipe's jobs).
    """
    if isinstance(obj, kind):
        yield obj
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from iter_specs(getattr(obj, name), kind)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from iter_specs(value, kind)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from iter_specs(value, kind)


def dump_run(spec: RunSpec) -> str:
    """The resolved run file (every default filled in) as YAML text."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


RunLike = RunSpec | str | Path | Mapping[str, Any]
"""What the public functions accept as a run: a :class:`RunSpec`, a run file's path, or the
run file's content as a mapping."""


def as_run_spec(spec: RunLike) -> RunSpec:
    """``spec`` as a validated :class:`RunSpec` (the one place the public API validates a run).

    Args:
        spec: a :class:`RunSpec` (returned as it is), the path of a YAML run file, or its
            content as a mapping.

    Raises:
        ConfigError: the file is missing or unreadable, or the run is invalid (the message
            names each wrong field).
    """
    if isinstance(spec, RunSpec):
        return spec
    if isinstance(spec, Mapping):
        return parse_run(dict(spec))
    return load_run_file(spec)
