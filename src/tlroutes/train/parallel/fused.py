"""The ``fused`` backend: same-shaped jobs stacked into one module, trained as one stage.

See :mod:`tlroutes.train.parallel` for why the stacked step equals each job's own, and when jobs
can fuse (:func:`fuse_problem` says what keeps them apart).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from tlroutes.manifest.record import note_saved
from tlroutes.objectives.tasks import primary_metric, task_loss
from tlroutes.problem import Task
from tlroutes.train.checkpoint import load_weights, save_weights_atomic
from tlroutes.train.engine import Trainer
from tlroutes.train.from_spec import evaluate, stage, stream
from tlroutes.train.parallel.jobs import (
    JobResult,
    Prepared,
    job_failed,
    job_finished,
    job_seed,
    synchronize,
)


def fuse_problem(prepared: list[Prepared]) -> str | None:
    """None when the jobs can be fused; else what keeps them apart, in words."""
    if not prepared:
        return "there are no jobs"
    first = prepared[0]
    if first.job.training.grad_clip is not None:
        return ("the jobs clip gradients (grad_clip), which takes one norm over all parameters "
                "of a model and would mix the stacked jobs")
    for p in prepared[1:]:
        pair = f"jobs '{first.name}' and '{p.name}'"
        for what in ("model", "training"):
            a, b = getattr(first.job, what), getattr(p.job, what)
            if a != b:
                keys = [k for k in type(a).model_fields if getattr(a, k) != getattr(b, k)]
                return f"{pair} differ in {', '.join(f'{what}.{k}' for k in keys)}"
        da, db = first.problem.domain, p.problem.domain
        if (da.input_shape, da.modality) != (db.input_shape, db.modality):
            return (f"{pair} read different inputs ({da.modality} {da.input_shape} vs "
                    f"{db.modality} {db.input_shape})")
        ta, tb = first.problem.task, p.problem.task
        if (ta.kind, ta.num_outputs) != (tb.kind, tb.num_outputs):
            return (f"{pair} have different tasks ({ta.kind} with {ta.num_outputs} outputs vs "
                    f"{tb.kind} with {tb.num_outputs})")
        na, nb = len(first.problem.train), len(p.problem.train)
        if na != nb:
            return f"{pair} have {na} and {nb} training samples, so their batches cannot stack"
        if _signature(first.model) != _signature(p.model):
            return f"{pair} build models of different shapes"
    return None


def _signature(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()]


class FusedStep(nn.Module):
    """Several same-shaped models as one stacked module; ``forward`` returns the sum of their
    losses, each on its own job's batch (see the module docstring for why that is exact).

    Parameters and buffers are stacked along a new first dimension, one slice per job. Buffers
    also hold each job's state for model selection and failure (``alive``, ``best`` …), so that
    the engine's checkpoints carry it and a resumed fused stage continues exactly.

    Args:
        models: the jobs' models, of identical structure and shapes.
        names: the jobs' names (the batch keys), in the same order.
        task: the jobs' task kind (their loss), shared.
        monitors: per job, ``(metric, higher_is_better)`` to select its best epoch on.
        patience: per-job early stopping (epochs without improvement). Default None.
    """

    def __init__(self, models: list[nn.Module], names: list[str], task: Task,
                 monitors: list[tuple[str, bool]] | None = None,
                 patience: int | None = None) -> None:
        super().__init__()
        params, buffers = stack_module_state(models)
        self.names, self.task, self.patience = list(names), task, patience
        self.monitors = monitors or [primary_metric(task)] * len(names)
        self.param_names = list(params)
        self.buffer_names = list(buffers)
        self.stacked = nn.ParameterList(nn.Parameter(p.detach()) for p in params.values())
        for i, b in enumerate(buffers.values()):
            self.register_buffer(f"stacked_buffer_{i}", b.detach().clone())
        # The template's own tensors are never used (functional_call swaps the stacked slices
        # in); a list keeps it out of this module's parameters and state.
        self._template = [copy.deepcopy(models[0]).to("meta")]
        j = len(names)
        self.register_buffer("alive", torch.ones(j, dtype=torch.bool))
        self.register_buffer("died_at", torch.full((j,), -1, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        # The best scores stay float64 whatever dtype the weights are cast to ("bf16-true"
        # casts every floating buffer, and would round the scores selection compares): held
        # as their bits, read through `best`.
        self.register_buffer("best_bits",
                             torch.full((j,), math.nan, dtype=torch.float64).view(torch.int64))
        self.register_buffer("best_epoch", torch.full((j,), -1, dtype=torch.long))
        self.register_buffer("bad", torch.zeros(j, dtype=torch.long))
        self.register_buffer("stopped", torch.zeros(j, dtype=torch.bool))
        self.register_buffer("epochs_run", torch.zeros(j, dtype=torch.long))
        self.register_buffer("improvements", torch.zeros((), dtype=torch.long))

    @property
    def best(self) -> Tensor:
        """Each job's best validation score so far (float64; NaN before its first)."""
        return self.best_bits.view(torch.float64)

    def train(self, mode: bool = True) -> FusedStep:
        super().train(mode)
        self._template[0].train(mode)
        return self

    def _buffers_by_name(self) -> dict[str, Tensor]:
        return {n: getattr(self, f"stacked_buffer_{i}") for i, n in enumerate(self.buffer_names)}

    def _output(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self._template[0], (params, buffers), (x,))

    def forward(self, batch: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        xs = torch.stack([batch[n][0] for n in self.names])
        ys = torch.stack([batch[n][1] for n in self.names])
        params = dict(zip(self.param_names, self.stacked, strict=True))
        outputs = vmap(self._output, randomness="different")(params, self._buffers_by_name(), xs)
        losses = job_losses(self.task, outputs, ys)
        finite = torch.isfinite(losses.detach())
        alive = self.alive & finite
        with torch.no_grad():
            self.died_at.copy_(torch.where(self.alive & ~finite, self.steps, self.died_at))
            self.alive.copy_(alive)
            self.steps += 1
        # A failed job's loss leaves the sum (so the engine sees a finite loss); its slice of
        # the weights is its own, so whatever becomes of it cannot reach the other jobs.
        return torch.where(alive, losses, torch.zeros_like(losses)).sum()

    @torch.no_grad()
    def load_into(self, index: int, model: nn.Module) -> nn.Module:
        """Copy job ``index``'s slice of the stacked weights into ``model``; returns it."""
        own = dict(model.named_parameters())
        for name, p in zip(self.param_names, self.stacked, strict=True):
            own[name].copy_(p[index])
        own_buffers = dict(model.named_buffers())
        for name, b in self._buffers_by_name().items():
            own_buffers[name].copy_(b[index])
        return model

    @torch.no_grad()
    def select(self, validate_job: Callable[[int], dict[str, float]],
               save_best: Callable[[int], None]) -> dict[str, float]:
        """After an epoch: validate each running job, keep its best epoch (``save_best``), count
        its epochs without improvement. Returns every job's validation metrics
        (``<job>/<metric>``), ``improvements`` (a count that grows while any job improves: the
        engine's monitor, so that its patience ends the stage once every job has stopped) and
        ``jobs_training``."""
        epoch = int(self.epoch)
        out: dict[str, float] = {}
        for i, name in enumerate(self.names):
            if not bool(self.alive[i]) or bool(self.stopped[i]):
                continue
            metrics = validate_job(i)
            metric, higher = self.monitors[i]
            score, sign = float(metrics[metric]), 1.0 if higher else -1.0
            self.epochs_run[i] += 1
            if int(self.best_epoch[i]) < 0 or sign * score > sign * float(self.best[i]):
                self.best[i], self.best_epoch[i], self.bad[i] = score, epoch, 0
                self.improvements += 1
                save_best(i)
            else:
                self.bad[i] += 1
                if self.patience is not None and int(self.bad[i]) >= self.patience:
                    self.stopped[i] = True
            out.update({f"{name}/{k}": float(v) for k, v in metrics.items()})
        self.epoch += 1
        out["improvements"] = float(self.improvements)
        out["jobs_training"] = float((self.alive & ~self.stopped).sum())
        return out


def job_losses(task: Task, outputs: Tensor, targets: Tensor) -> Tensor:
    """Each job's mean loss ``(J,)`` from outputs ``(J, B, …)``: :func:`task_loss` of every job,
    computed batched (outside ``vmap``, where the losses' decompositions are slow)."""
    if task.kind == "classification":
        j, b = targets.shape[:2]
        per = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(0, 1), reduction="none")
        return per.view(j, b).mean(1)
    if outputs.shape != targets.shape:
        task_loss(task, outputs[0], targets[0])  # raises the DataError that names the shapes
    targets = targets.to(outputs.dtype)
    loss = (F.binary_cross_entropy_with_logits if task.kind == "multilabel" else F.mse_loss)
    return loss(outputs, targets, reduction="none").flatten(1).mean(1)


def time_fused_step(prepared: list[Prepared], device: torch.device, repeats: int = 2) -> float:
    """Seconds of one fused training step (forward and backward) of the jobs, on copies."""
    names = [p.name for p in prepared]
    fused = FusedStep([p.model for p in prepared], names, prepared[0].problem.task).to(device)
    fused.train()
    batch = min(prepared[0].job.training.batch_size, len(prepared[0].problem.train))
    data = {p.name: (p.problem.train.x[:batch].to(device), p.problem.train.y[:batch].to(device))
            for p in prepared}
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fused(data).backward()
        fused.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times[1:] or times)


def run_fused(prepared: list[Prepared], trainer: Trainer, run_seed: int,
              folders: Mapping[str, Path]) -> dict[str, JobResult]:
    """Train same-shaped jobs as one fused stage (named ``fused``) of ``trainer``.

    The stage's checkpoints (``<trainer's folder>/checkpoints/fused/``) hold the stacked weights
    and every job's selection state, so the stage resumes like any other. Each job gets
    ``best.safetensors``, ``model.safetensors`` (its best epoch) and ``result.json`` in its own
    folder of ``folders``.
    """
    t0 = time.perf_counter()
    first = prepared[0]
    train = first.job.training
    names = [p.name for p in prepared]
    # in the run's dtype ("64-true", "bf16-true"), as the stacked copy trains: each job's model
    # is validated, tested and saved in it
    models = [trainer.prepare(p.model) for p in prepared]
    fused = FusedStep(models, names, first.problem.task,
                      [primary_metric(p.problem.task) for p in prepared], train.patience)
    streams = {p.name: stream(p.problem.train, train, job_seed(run_seed, p.name), p.name)
               for p in prepared}

    def validate_job(i: int) -> dict[str, float]:
        p = prepared[i]
        return evaluate(fused.load_into(i, models[i]), p.problem.val, p.problem.task)

    def save_best(i: int) -> None:
        if trainer.is_main:
            save_weights_atomic(models[i], folders[names[i]] / "best.safetensors")

    fused_stage = stage("fused", fused, streams, lambda: fused.select(validate_job, save_best),
                        first.problem.task, train, monitor="improvements", mode="max",
                        restore_best=False)
    trainer.fit(fused_stage)
    elapsed = time.perf_counter() - t0
    steps_per_epoch = max(s.steps_per_pass for s in streams.values())
    results = {}
    for i, p in enumerate(prepared):
        folder = folders[p.name]
        if not bool(fused.alive[i]):
            step = int(fused.died_at[i])
            epoch, within = divmod(step, steps_per_epoch)
            results[p.name] = job_failed(p.name, (
                f"the loss became non-finite at epoch {epoch + 1}, step {within + 1} (global step "
                f"{step + 1}) of the fused stage; the other jobs went on. Lower the learning "
                "rate or check the data."), folder)
            continue
        load_weights(models[i], folder / "best.safetensors")
        metrics = evaluate(models[i], p.problem.test, p.problem.task)
        if trainer.is_main:
            save_weights_atomic(models[i], folder / "model.safetensors")
            # its manifest.json, as a job trained on its own gets from Trainer.save_model
            note_saved(models[i], folder / "model.safetensors", job_seed(run_seed, p.name),
                       precision=trainer.fabric.strategy.precision.precision)
        results[p.name] = job_finished(
            p.name, p.job, p.problem, models[i], metrics, folder,
            best_epoch=int(fused.best_epoch[i]), epochs_run=int(fused.epochs_run[i]),
            stopped_early=bool(fused.stopped[i]), time_s=elapsed)
    return results

