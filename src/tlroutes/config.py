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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tlroutes.errors import ConfigError, did_you_mean


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataSpec(_Spec):
    """One problem's data."""

    dataset: str = Field(
        "digits",
        description="A built-in generator ('digits': scikit-learn's 8×8 digits; 'mnist1d': "
        "procedural 1-D signals) or a path to an .npz file with arrays x_train, y_train, x_val, "
        "y_val, x_test, y_test (and optionally 'labels', the label names). Default 'digits'.",
    )
    task: str = Field(
        "digit",
        description="Built-in data: the task variant — 'digit' (10 classes), 'parity', 'gt4' "
        "(greater than 4), 'properties' (multilabel: even, >4, prime, loop) or 'position' "
        "(regression: where the digit sits on a larger canvas). "
        ".npz data: the task kind — 'classification', 'multilabel' or 'regression'. "
        "Default 'digit'.",
    )
    shift: dict[str, float] = Field(
        default_factory=dict,
        description="Built-in data: domain shifts, knob → strength. Images: rotation (degrees), "
        "inversion (1 = on), noise (Gaussian sigma), blur (sigma, pixels), scale (zoom factor). "
        "Signals: noise, shear, translation (the MNIST-1D generator's knobs). Default {} (none).",
    )
    classes: list[int] | None = Field(
        None, description="Built-in data: keep only these digit classes. Default: all ten."
    )
    canvas: int | None = Field(
        None, ge=1, description="Built-in data: paste every sample at a random place on a zero "
        "canvas of this size (images: side in pixels, at least 8; signals: length, at least "
        "40). Default: no canvas (16 / 80 for task 'position').",
    )
    n: int | None = Field(
        None, ge=3, description="Keep this many samples before splitting. Default: all."
    )
    split: tuple[float, float, float] = Field(
        (0.6, 0.2, 0.2), description="Train / validation / test fractions. Default 0.6/0.2/0.2."
    )
    seed: int | None = Field(
        None, description="Seed for sampling, splitting and shifts. Default: the run's seed."
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


class ModelSpec(_Spec):
    """The network: stems → trunk → heads."""

    trunk: str = Field(
        "cnn2d", description="Built-in trunk: 'mlp', 'cnn2d', 'cnn1d' or 'transformer'. "
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
    """How one stage trains."""

    epochs: int = Field(10, ge=1, description="Passes over the training data. Default 10.")
    batch_size: int = Field(64, ge=1, description="Samples per step (over all processes). "
                            "Default 64.")
    lr: float = Field(1e-3, gt=0, description="Base learning rate. Default 1e-3.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay. Default 0.")
    optimizer: Literal["adamw", "adam", "sgd"] = Field(
        "adamw", description="'adamw' (default), 'adam' or 'sgd' (momentum 0.9)."
    )
    scheduler: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning-rate schedule: 'cosine' (default) or 'constant'."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps. Default 0.")
    patience: int | None = Field(
        None, ge=1, description="Early stopping: epochs without validation improvement before "
        "stopping. Default: never stop early.",
    )
    grad_clip: float | None = Field(
        None, gt=0, description="Clip the gradient norm to this value. Default: no clipping."
    )


@dataclass
class Hardware:
    """Where and how a run trains: what :meth:`HardwareSpec.build` gives the training engine.

    Plain values (no Fabric): :func:`tlroutes.train.hardware.make_fabric` launches them.

    Args:
        accelerator: ``"auto"`` (a GPU when present, else CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
        devices: number of devices (processes) on this machine. Default 1.
        num_nodes: number of machines. Default 1.
        precision: ``"32-true"`` (default), ``"bf16-mixed"``, ``"16-mixed"``, ``"64-true"``.
        threads: CPU threads per process; None (default) divides the machine's cores among the
            processes on it, so that two processes on two cores do not oversubscribe them.
    """

    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"
    threads: int | None = None

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.devices * self.num_nodes > 1


class HardwareSpec(_Spec):
    """Where the run trains (see :class:`Hardware`)."""

    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = Field(
        "auto", description="'auto' (default: a GPU when present), 'cpu', 'cuda', 'mps'."
    )
    devices: int = Field(1, ge=1, description="Processes (devices) on this machine. Default 1.")
    num_nodes: int = Field(1, ge=1, description="Machines. Default 1.")
    precision: Literal["32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true"] = Field(
        "32-true", description="Numeric precision. Default '32-true'."
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads per process. Default: cores ÷ processes."
    )

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
    seed: int = Field(0, description="The run's seed; every stage derives its own. Default 0.")
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


def load_run_file(path: str | Path) -> RunSpec:
    """Read and validate a run file; every problem becomes one clear :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Run file {path} does not exist. `tlroutes run` needs a YAML file; "
                          "see examples/ for ones to copy.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of fields (route:, source:, ...).")
    return parse_run(data, source=str(path))


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
        where = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            fields = _fields_at(model, loc[:-1])
            lines.append(
                f"  - unknown key '{where}'.{did_you_mean(loc[-1], fields)} "
                f"Valid keys here: {', '.join(fields)}."
            )
        elif err["type"] == "missing":
            lines.append(f"  - '{where}' is required.")
        else:
            lines.append(f"  - '{where}': {err['msg']} (got {err.get('input')!r}).")
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
