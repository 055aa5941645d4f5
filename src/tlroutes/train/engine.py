"""The training engine: runs one :class:`Stage` at a time, resumably.

A route is a short recipe of stages. A stage optimises one ``step`` module — whose ``forward``
takes a dict of batches (one per named stream) and returns the loss — for some epochs, selects
the best epoch on validation only, and checkpoints every epoch. Because every stage checkpoints
under its own name and ends by reseeding from a derived seed, running a recipe again with
``resume=True`` skips finished stages, continues the interrupted one from its last epoch, and
ends bit-identical to a run that was never stopped.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from lightning_fabric import Fabric
    from lightning_fabric.plugins.precision import Precision

    from tlroutes.train.tracking import Tracker

from tlroutes.errors import CheckpointError, ConfigError, TrainingDivergedError
from tlroutes.lazy_inputs import LazyInputs
from tlroutes.manifest.record import note_saved
from tlroutes.model import apply_frozen_state
from tlroutes.runfolder import register_root, write_json
from tlroutes.runfolder.reads import read_done
from tlroutes.train.checkpoint import (
    KEEP_CHECKPOINTS,
    DamagedCheckpointError,
    has_checkpoint,
    load_weights,
    resume_checkpoint,
    save_checkpoint,
    save_weights_atomic,
)
from tlroutes.train.hardware import Hardware, make_fabric
from tlroutes.train.loading import DataLoading, eval_batches, set_data_loading
from tlroutes.train.metrics_log import MetricsLog
from tlroutes.train.precision import (
    evaluation_precision,
    for_weights,
    forward_in,
    set_evaluation_precision,
)
from tlroutes.train.progress import ProgressReporter
from tlroutes.train.seeding import derive_seed, get_rng_state, seed_everything, set_rng_state
from tlroutes.train.streams import Stream

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "constant")


@dataclass
class Stage:
    """One training stage of a route.

    Args:
        name: unique within a run; names the checkpoint folder and the metrics lines.
        step: module whose ``forward(batch)`` returns the loss (or ``(loss, logs)``); ``batch``
            maps each stream name to its ``(x, y)``. Holds every trainable part (model and
            objective modules), so data-parallel training sees them all.
        streams: named training streams; every step draws one batch from each.
        validate: returns validation metrics of the current weights (called in eval mode,
            without gradients). Model selection and early stopping read only this.
        monitor: the key of ``validate()``'s result to select on. Default ``"accuracy"``.
        mode: ``"max"`` (default) or ``"min"``: whether a larger monitored value is better.
        epochs: the stage's length in passes over the longest stream (``epochs ×
            steps_per_epoch`` steps). Default 10; ignored when ``steps`` is given.
        steps: the stage's length in optimizer steps, whatever the data's size. Default None
            (``epochs`` sets it).
        val_every_steps: validate (and select, early-stop and checkpoint) every this many
            steps, and at the end. Default None: once per epoch (``steps_per_epoch``). The
            records' ``epoch`` counts these validation rounds; ``step`` counts steps.
        lr: base learning rate. Default 1e-3.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD). Default 0.
        optimizer: ``"adamw"`` (default), ``"adam"`` or ``"sgd"`` (momentum 0.9).
        scheduler: ``"cosine"`` (default; decays to 0 over all steps, after warmup) or
            ``"constant"``.
        warmup_steps: linear warm-up steps. Default 0.
        patience: stop after this many validations (epochs) without improvement; None
            (default) never stops early.
        param_groups: optimizer parameter groups (e.g. from
            :func:`tlroutes.model.param_groups`); None (default) takes every trainable
            parameter of ``step`` at ``lr``.
        steps_per_epoch: None (default) uses the longest stream's batches per pass.
        grad_clip: clip the global gradient norm to this value; None (default) does not clip.
        restore_best: end the stage with the best validation epoch's weights. Default True.
        eval_modules: modules kept in eval mode while training (frozen parts, so that their
            batch-norm statistics and dropout stay fixed). Default: none.
        backward: replaces ``loss.backward()`` (e.g. a multi-task weighting that combines
            per-task gradients): called with what ``step`` returned as its loss, it accumulates
            gradients and returns ``(total, logs)`` — the scalar to log and check for NaN, and
            extra figures. Default None: the loss is a scalar and is back-propagated as usual.
        on_epoch_end: called after each epoch's training steps (e.g. a weighting that
            compares epochs, such as DWA). Default None.
    """

    name: str
    step: nn.Module
    streams: dict[str, Stream]
    validate: Callable[[], dict[str, float]]
    monitor: str = "accuracy"
    mode: Literal["max", "min"] = "max"
    epochs: int | None = 10
    steps: int | None = None
    val_every_steps: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    warmup_steps: int = 0
    patience: int | None = None
    param_groups: list[dict[str, Any]] | None = None
    steps_per_epoch: int | None = None
    grad_clip: float | None = None
    restore_best: bool = True
    eval_modules: list[nn.Module] = field(default_factory=list)
    backward: Callable[[Any], tuple[Tensor, dict[str, Tensor]]] | None = None
    on_epoch_end: Callable[[], Any] | None = None


@dataclass
class StageResult:
    """What a finished stage reports: its best epoch and score, and every epoch's record."""

    name: str
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


class Trainer:
    """Runs stages for one run folder.

    Args:
        run_dir: the run folder; checkpoints go to ``run_dir/checkpoints/<stage>/`` and metrics to
            ``run_dir/metrics.jsonl``.
        seed: the run's seed; every stage derives its own from it. Default 0.
        hardware: devices, precision and processes; default: one device, chosen automatically.
        resume: continue stages from their checkpoints. When False and a stage's checkpoint
            exists, :meth:`fit` refuses rather than overwrite work. Default False.
        progress: show progress (only on the first process). Default True.
        fabric: an already launched Fabric to reuse; None creates one from ``hardware``.
        tracker: also log every epoch's metrics there (TensorBoard, MLflow; see
            :mod:`tlroutes.train.tracking`), from the first process only. Default None:
            ``metrics.jsonl`` only.
        keep_checkpoints: checkpoints kept per stage, newest first: one to resume from, the
            others to fall back to when it is damaged. Default 2 (at least 1).

    Every file goes through :func:`tlroutes.runfolder.atomic_write` (atomic, never through a
    symlink below ``run_dir``); weights and checkpoints carry sha256 hashes checked at load (see
    :mod:`tlroutes.train.checkpoint`). The Trainer does not lock ``run_dir``: the runner does
    (:class:`tlroutes.runfolder.RunLock`), for the whole run.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        seed: int = 0,
        hardware: Hardware | None = None,
        resume: bool = False,
        progress: bool | ProgressReporter = True,
        fabric: Fabric | None = None,
        tracker: Tracker | None = None,
        keep_checkpoints: int = KEEP_CHECKPOINTS,
    ) -> None:
        if keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be at least 1, got {keep_checkpoints}.")
        self.run_dir = Path(run_dir)
        register_root(self.run_dir)
        self.keep_checkpoints = keep_checkpoints
        self.seed = seed
        self.resume = resume
        hardware = hardware or Hardware()
        self.fabric = fabric or make_fabric(hardware)
        # Lazily read data (streams and evaluate_split) follows the run's hardware settings.
        set_data_loading(DataLoading(
            workers=-1 if hardware.workers is None else hardware.workers,
            eval_batch_size=hardware.eval_batch_size,
            pin_memory=self.fabric.device.type == "cuda"))
        # Evaluation (validation, test metrics, feature caches) runs as training's forward does:
        # under Fabric's autocast for "-mixed", in the weights' dtype for "-true".
        set_evaluation_precision(self.fabric.strategy.precision)
        first = self.fabric.global_rank == 0
        self.is_main = first
        self.progress = (
            progress if isinstance(progress, ProgressReporter)
            else ProgressReporter(enabled=bool(progress) and first)
        )
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=first, tracker=tracker)
        # A per-step finiteness check forces a device sync; on accelerators check less often.
        self.check_every = 1 if self.fabric.device.type == "cpu" else 50

    @property
    def device(self) -> torch.device:
        """The device this process trains on."""
        return self.fabric.device

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to this process's device in the dtype training gives it (float64 under
        "64-true", bfloat16 under "bf16-true"; as is otherwise), as :meth:`fit` would: for a
        model evaluated before any stage trains it (a frozen trunk's feature cache)."""
        return self.fabric.strategy.precision.convert_module(model.to(self.device))

    def seed_for(self, *names: object) -> None:
        """Seed every RNG from the run seed and ``names`` (call before building a model)."""
        seed_everything(derive_seed(self.seed, *names))

    def save_model(self, model: nn.Module, name: str = "model") -> Path:
        """Save a recipe's trained model as ``<run_dir>/<name>.safetensors`` (first process),
        in the dtype it trained in (float64 under "64-true", bfloat16 under "bf16-true")."""
        path = self.run_dir / f"{name}.safetensors"
        if self.is_main:
            save_weights_atomic(model, path)
            # its manifest.json (tlroutes.manifest), with the precision it trained and evaluated in
            note_saved(model, path, self.seed, precision=self.fabric.strategy.precision.precision)
        return path

    def stage_dir(self, name: str) -> Path:
        """The checkpoint folder of stage ``name``."""
        return self.run_dir / "checkpoints" / name

    # ------------------------------------------------------------------ the stage loop
    def fit(self, stage: Stage) -> StageResult:
        """Train ``stage`` (or load it, when a resumed run already finished it)."""
        folder = self.stage_dir(stage.name)
        done = folder / "done.json"
        if done.is_file():
            if not self.resume:
                raise CheckpointError(
                    f"Stage '{stage.name}' already finished in {self.run_dir}; pass resume=True "
                    "(--resume) to reuse it, or choose a new run folder."
                )
            finished = self._load_finished(stage, folder)
            if finished is not None:
                return finished
        if has_checkpoint(folder) and not self.resume:
            raise CheckpointError(
                f"{self.run_dir} already holds a checkpoint of stage '{stage.name}'; pass "
                "resume=True (--resume) to continue it, or choose a new run folder."
            )
        _check_stage(stage)
        fabric = self.fabric
        if stage.backward is not None and getattr(fabric.strategy.precision, "scaler", None):
            # A float16 loss needs scaling (Fabric's GradScaler) before its gradients are made;
            # a backward of the stage's own (per-task gradients) runs past the scaler.
            raise ConfigError(
                f"Stage '{stage.name}' makes its own gradients (a multi-task weighting), which "
                "hardware.precision '16-mixed' cannot scale (float16 gradients need a loss "
                "scaler); use 'bf16-mixed' (bfloat16 needs no scaling) or '32-true'.")
        seed_everything(derive_seed(self.seed, stage.name))
        for s in stage.streams.values():
            s.rank, s.world_size = fabric.global_rank, fabric.world_size
            s.to(fabric.device)
        per_pass = stage.steps_per_epoch or max(s.steps_per_pass for s in stage.streams.values())
        total = stage.steps if stage.steps is not None else per_pass * stage.epochs
        every = min(stage.val_every_steps or per_pass, total)
        rounds = math.ceil(total / every)
        raw = stage.step.to(fabric.device)
        found = resume_checkpoint(folder, raw) if self.resume else None
        state = None
        if found is not None:
            state = found[1]
            # The freezing in force when the checkpoint was written, before the optimizer sees
            # which parameters train.
            _apply_frozen(raw, state.get("frozen", []), stage.name)
        optimizer = _make_optimizer(stage, raw)
        module, optimizer = fabric.setup(raw, optimizer)
        # Setup casts the weights for the "-true" precisions (64-true, bf16-true); the held data
        # follows, once, so that batches are in the weights' dtype (mixed precision keeps float32).
        dtype = weights_dtype(raw)
        for s in stage.streams.values():
            s.to(fabric.device, dtype)
        scheduler = _make_scheduler(stage, optimizer, total)

        start, history, best, best_epoch, bad = 0, [], None, -1, 0
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            start, history = state["epoch"] + 1, list(state["history"])
            best, best_epoch, bad = state["best"], state["best_epoch"], state["bad_epochs"]
            self.log.replace_stage(stage.name, history)

        sign = 1.0 if stage.mode == "max" else -1.0
        # A checkpoint written at the epoch that stopped early (killed before done.json) ends
        # the stage as it would have ended, instead of training on.
        stopped_early = (state is not None and stage.patience is not None
                         and bad >= stage.patience)
        if stopped_early:
            start = rounds
        self.progress.start_stage(stage.name, rounds, every, start)
        for s in stage.streams.values():
            self.progress.note(f"[{stage.name}] {s.describe()}")
        try:
            for epoch in range(start, rounds):
                t0 = time.perf_counter()
                first = epoch * every
                n = min(every, total - first)
                train = self._train_epoch(stage, module, optimizer, scheduler, epoch, first, n)
                if stage.on_epoch_end is not None:
                    stage.on_epoch_end()
                record = {"stage": stage.name, "epoch": epoch, "step": first + n, **train}
                record.update({f"val_{k}": float(v) for k, v in self._validate(stage).items()})
                score = record.get(f"val_{stage.monitor}")
                if score is None:
                    raise ConfigError(
                        f"Stage '{stage.name}' monitors '{stage.monitor}', but validation "
                        f"reports only {sorted(k[4:] for k in record if k.startswith('val_'))}."
                    )
                if best is None or sign * score > sign * best:
                    best, best_epoch, bad = score, epoch, 0
                    if self.is_main:
                        save_weights_atomic(raw, folder / "best.safetensors")
                else:
                    bad += 1
                record["lr"] = float(optimizer.param_groups[0]["lr"])
                record["time_s"] = time.perf_counter() - t0
                history.append(record)
                if self.is_main:
                    save_checkpoint(folder, epoch, raw, keep=self.keep_checkpoints, state={
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": get_rng_state(),
                        "epoch": epoch,
                        "history": history,
                        "best": best,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad,
                        "frozen": [n for n, p in raw.named_parameters() if not p.requires_grad],
                    })
                fabric.barrier()
                self.log.append(record)
                self.progress.end_epoch(record, rounds)
                if stage.patience is not None and bad >= stage.patience:
                    stopped_early = True
                    break
        finally:
            self.progress.end_stage()
            for s in stage.streams.values():
                if hasattr(s, "close"):
                    s.close()
        if stage.restore_best and best_epoch >= 0:
            self._restore_best(raw, folder, best_epoch)
        result = StageResult(stage.name, best_epoch, float(best), len(history), stopped_early,
                             history)
        if self.is_main:
            save_weights_atomic(raw, folder / "final.safetensors")
            write_json(done, result.as_dict())
        fabric.barrier()
        seed_everything(derive_seed(self.seed, stage.name, "after"))
        return result

    def _train_epoch(
        self, stage, module, optimizer, scheduler, epoch: int, first_step: int, steps: int
    ) -> dict[str, float]:
        """Train global steps ``first_step … first_step + steps - 1`` (one validation round)."""
        module.train()
        for frozen in stage.eval_modules:
            frozen.eval()
        streams = list(stage.streams.items())
        # Fabric's module/optimizer wrappers only pass calls through on one device at plain
        # precision, yet cost ~0.1 ms a step in Python; there, call the step module and optimizer
        # directly. Anything else (DDP, mixed/half/double precision, callbacks) goes via Fabric.
        if _wrappers_pass_through(self.fabric):
            forward, step_optimizer = stage.step, getattr(optimizer, "optimizer", optimizer)
            backward = Tensor.backward
        else:
            forward, step_optimizer, backward = module, optimizer, self.fabric.backward
        total = torch.zeros((), device=self.fabric.device)
        logs: dict[str, Tensor] = {}
        tick = max(1, steps // 20)
        for i in range(steps):
            batch = {name: s.batch(first_step + i) for name, s in streams}
            loss = forward(batch)
            if isinstance(loss, tuple):
                loss, extra = loss
                for key, value in extra.items():
                    logs[key] = logs.get(key, 0.0) + value.detach()
            if stage.backward is not None:
                # A custom backward (multi-task weighting) makes the gradients itself.
                step_optimizer.zero_grad(set_to_none=True)
                with _fabric_backward():
                    loss, extra = stage.backward(loss)
                for key, value in extra.items():
                    logs[key] = logs.get(key, 0.0) + value.detach()
            if i % self.check_every == 0 and not math.isfinite(loss.item()):
                raise TrainingDivergedError(
                    f"Stage '{stage.name}': the loss became {float(loss.detach())} at epoch "
                    f"{epoch + 1}, "
                    f"step {i + 1} (global step {first_step + i + 1}). Training stopped; the last "
                    f"good checkpoint is kept in {self.stage_dir(stage.name)}. Lower the learning "
                    "rate, clip gradients (grad_clip) or check the data."
                )
            if stage.backward is None:
                step_optimizer.zero_grad(set_to_none=True)
                backward(loss)
            if stage.grad_clip is not None:
                self.fabric.clip_gradients(module, optimizer, max_norm=stage.grad_clip)
            step_optimizer.step()
            scheduler.step()
            total += loss.detach()
            if i % tick == tick - 1:
                self.progress.advance(tick)
        self.progress.advance(steps % tick)
        mean = float(total) / steps
        if not math.isfinite(mean):
            raise TrainingDivergedError(
                f"Stage '{stage.name}': the loss became non-finite during epoch {epoch + 1}. "
                f"The last good checkpoint is kept in {self.stage_dir(stage.name)}."
            )
        out = {"train_loss": mean}
        out.update({f"train_{k}": float(v) / steps for k, v in logs.items()})
        return out

    def _validate(self, stage: Stage) -> dict[str, float]:
        was_training = stage.step.training
        stage.step.eval()
        with torch.no_grad():
            metrics = stage.validate()
        stage.step.train(was_training)
        return metrics

    def _restore_best(self, raw: nn.Module, folder: Path, best_epoch: int) -> None:
        """Load the best epoch's weights; when ``best.safetensors`` is damaged, from that epoch's
        checkpoint if it is still kept."""
        best = folder / "best.safetensors"
        try:
            load_weights(raw, best, verify=True)
            return
        except DamagedCheckpointError as exc:
            damage = exc
        from tlroutes.train.checkpoint import load_checkpoint

        kept = folder / f"epoch-{best_epoch:04d}"
        try:
            load_checkpoint(kept, raw)
        except (CheckpointError, OSError):
            raise CheckpointError(
                f"{damage} The best epoch's checkpoint is no longer kept, so the stage's result "
                f"cannot be rebuilt: delete {folder} and resume to train the stage again, or "
                "start a new --out folder.") from None
        warnings.warn(f"{damage} Using the best epoch's checkpoint {kept.name} instead.",
                      stacklevel=3)
        if self.is_main:
            save_weights_atomic(raw, best)

    def _load_finished(self, stage: Stage, folder: Path) -> StageResult | None:
        """The finished stage's result and weights; None when ``final.safetensors`` is damaged
        but a checkpoint remains, from which :meth:`fit` finishes the stage again (identically:
        the stage's last checkpoint is its last epoch)."""
        record = read_done(folder / "done.json")
        stage.step.to(self.fabric.device)
        try:
            load_weights(stage.step, folder / "final.safetensors", verify=True)
        except DamagedCheckpointError as exc:
            if not has_checkpoint(folder):
                raise CheckpointError(
                    f"{exc} Stage '{stage.name}' has no checkpoint left to finish it again from: "
                    f"delete {folder} and resume to train it again, or start a new --out "
                    "folder.") from None
            warnings.warn(f"{exc} Finishing stage '{stage.name}' again from its newest "
                          "checkpoint.", stacklevel=3)
            return None
        seed_everything(derive_seed(self.seed, stage.name, "after"))
        return StageResult(**record.model_dump())


def _apply_frozen(module: nn.Module, frozen: list[str], stage: str) -> None:
    """Freeze exactly the parameters that were frozen when the checkpoint was written."""
    try:
        apply_frozen_state(module, frozen)
    except CheckpointError as err:
        raise CheckpointError(f"Stage '{stage}', its checkpoint: {err}") from None


@contextmanager
def _fabric_backward() -> Iterator[None]:
    """A stage's own backward, as Fabric's ``backward`` would run it. Under mixed precision
    Fabric's wrapped module refuses gradients made outside ``fabric.backward``, which adds only
    loss scaling there (float16's; :meth:`Trainer.fit` refuses that for such stages) to
    ``loss.backward()``; this sets the flag ``fabric.backward`` sets."""
    import lightning_fabric.wrappers as wrappers

    before = getattr(wrappers, "_in_fabric_backward", False)
    wrappers._in_fabric_backward = True
    try:
        yield
    finally:
        wrappers._in_fabric_backward = before


def _wrappers_pass_through(fabric: Fabric) -> bool:
    """True when Fabric's module and optimizer wrappers would add nothing to a step: a single
    device, full precision (no casting, no autocast) and no Fabric callbacks."""
    from lightning_fabric.plugins.precision import Precision
    from lightning_fabric.strategies import SingleDeviceStrategy

    strategy = fabric.strategy
    return (
        type(strategy) is SingleDeviceStrategy
        and type(strategy.precision) is Precision
        and not getattr(fabric, "_callbacks", None)
    )


def _check_stage(stage: Stage) -> None:
    if stage.steps is None and (stage.epochs is None or stage.epochs < 1):
        raise ConfigError(f"Stage '{stage.name}': epochs must be at least 1, got {stage.epochs}.")
    for key in ("steps", "val_every_steps"):
        value = getattr(stage, key)
        if value is not None and value < 1:
            raise ConfigError(f"Stage '{stage.name}': {key} must be at least 1, got {value}.")
    if not stage.streams:
        raise ConfigError(f"Stage '{stage.name}' has no training streams.")
    if stage.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"Stage '{stage.name}': optimizer '{stage.optimizer}' is unknown; use one of "
            f"{', '.join(OPTIMIZERS)}."
        )
    if stage.scheduler not in SCHEDULERS:
        raise ConfigError(
            f"Stage '{stage.name}': scheduler '{stage.scheduler}' is unknown; use one of "
            f"{', '.join(SCHEDULERS)}."
        )
    if stage.mode not in ("max", "min"):
        raise ConfigError(f"Stage '{stage.name}': mode must be 'max' or 'min'.")


def _make_optimizer(stage: Stage, module: nn.Module) -> torch.optim.Optimizer:
    if stage.param_groups is not None:
        groups = stage.param_groups
    else:
        groups = [{"params": [p for p in module.parameters() if p.requires_grad]}]
    if not any(len(list(g["params"])) for g in groups):
        raise ConfigError(
            f"Stage '{stage.name}' has no trainable parameters: everything is frozen. "
            "Unfreeze some part of the model for this stage."
        )
    if stage.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=stage.lr, momentum=0.9, weight_decay=stage.weight_decay)
    cls = torch.optim.AdamW if stage.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=stage.lr, weight_decay=stage.weight_decay)


class _WarmupCosine:
    """Multiplier: linear warm-up, then cosine decay to 0 (picklable, unlike a lambda)."""

    def __init__(self, warmup: int, total: int, cosine: bool) -> None:
        self.warmup, self.total, self.cosine = warmup, max(total, 1), cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def _make_scheduler(stage: Stage, optimizer, total_steps: int):
    fn = _WarmupCosine(stage.warmup_steps, total_steps, stage.scheduler == "cosine")
    inner = getattr(optimizer, "optimizer", optimizer)
    return torch.optim.lr_scheduler.LambdaLR(inner, fn)


def evaluate_split(
    model: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor | LazyInputs,
    batch_size: int | None = None, *, precision: Precision | None = None,
) -> Tensor:
    """Outputs of ``forward`` over ``x`` in eval mode, batched, without gradients.

    ``x`` is a tensor (sliced) or a :class:`~tlroutes.lazy_inputs.LazyInputs` (read through the
    run's data-loading workers, one batch at a time; only the batch goes to the device).
    ``batch_size`` None (default): ``hardware.eval_batch_size``, else sized to memory (see
    :func:`tlroutes.train.loading.eval_batch_size`). ``model`` is switched to eval mode for the
    call and back afterwards. The forward runs in the run's precision, outputs at least float32
    (see :func:`iter_outputs`; ``precision`` there).
    """
    return torch.cat(list(iter_outputs(model, forward, x, batch_size, precision=precision)))


def iter_outputs(
    model: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor | LazyInputs,
    batch_size: int | None = None, *, precision: Precision | None = None,
) -> Iterator[Tensor]:
    """:func:`evaluate_split`'s outputs one batch at a time (for results too large to hold).

    Each batch goes through the run's precision as training's forward does (see
    :mod:`tlroutes.train.precision`): floating inputs in the weights' dtype, the forward under
    Fabric's autocast for mixed precision; half-precision outputs come back as float32.
    ``precision`` is a Fabric precision plugin; None (default) is the current run's. A model
    not in a "-true" precision's dtype (no stage has trained it yet) runs in its own dtype.
    """
    weights = weights_dtype(model)
    plugin = for_weights(precision if precision is not None else evaluation_precision(), weights)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = weights if x.is_floating_point() else None
    try:
        with torch.no_grad():
            for xb in eval_batches(x, batch_size):
                yield forward_in(plugin, forward, xb.to(device=device, dtype=dtype))
    finally:
        model.train(was_training)


def weights_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first floating parameter (None when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
