"""A trained run's model, ready for new data: :func:`load` and :class:`Predictor`.

Example::

    predictor = tlroutes.load("runs/task_fine_tuning")
    labels = predictor.predict("new_samples.npz")          # class names, one per sample
    proba = predictor.predict_proba(x)                     # (N, classes), rows sum to 1
    frame = predictor.predict_frame(x)                     # labels and p_<class> columns

The model is rebuilt from the run's ``manifest.json`` and its ``model.safetensors`` (nothing is
unpickled); new data goes through the preprocessing the run saved (:mod:`tlroutes.use.inputs`)
and through the model in batches, without gradients, on the CPU unless ``device`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tlroutes.errors import ConfigError, did_you_mean
from tlroutes.manifest import find_manifests, read_manifest
from tlroutes.manifest.describe import task_from
from tlroutes.manifest.rebuild import rebuild_model
from tlroutes.problem import Problem, Split, Task
from tlroutes.train.precision import precision_plugin
from tlroutes.use.inputs import Inputs, as_inputs

__all__ = ["Predictor", "load"]

SPLITS = ("train", "val", "test")


def load(run_dir: str | Path, *, job: str | None = None, seed: int | None = None,
         device: str | torch.device = "cpu") -> Predictor:
    """The trained model of the run folder ``run_dir``, as a :class:`Predictor`.

    Args:
        run_dir: a run folder ``tlroutes run`` wrote (or one seed's or job's folder in it).
        job: Parallel Training: the job whose model to load. Default None (required when the
            run trained several jobs; the error lists them).
        seed: a multi-seed run: the seed whose model to load. Default None: the first seed.
        device: where the model runs. Default ``"cpu"``.

    Raises:
        ConfigError: no trained model, no manifest (an older run: the message says how to
            rebuild it), or an unknown job or seed.
    """
    run_dir = Path(run_dir)
    found = find_manifests(run_dir)
    seeds = sorted({k.split("/")[0] for k in found if k.startswith("seed-")},
                   key=lambda s: int(s.split("-")[1]))
    if seeds:
        wanted = f"seed-{seed}" if seed is not None else seeds[0]
        if wanted not in seeds:
            raise ConfigError(f"{run_dir} has no seed {seed}; its seeds: "
                              f"{', '.join(s.split('-')[1] for s in seeds)}.")
        found = {k.partition("/")[2]: v for k, v in found.items() if k.split("/")[0] == wanted}
    elif seed is not None:
        raise ConfigError(f"{run_dir} is a one-seed run; leave seed out.")
    jobs = {k.rsplit("/", 1)[-1]: v for k, v in found.items() if k}
    if job is not None:
        if job not in jobs:
            known = ", ".join(sorted(jobs)) or "none (not a Parallel Training run)"
            raise ConfigError(f"Unknown job '{job}'.{did_you_mean(job, jobs)} The jobs of "
                              f"{run_dir}: {known}.")
        folder = jobs[job]
    elif "" in found:
        folder = found[""]
    elif len(jobs) == 1:
        folder = next(iter(jobs.values()))
    else:
        raise ConfigError(f"{run_dir} holds one model per job ({', '.join(sorted(jobs))}); say "
                          "which with job=<name> (--job).")
    return Predictor(folder, device=device)


class Predictor:
    """One trained model and what it needs to read new data (see the module doc).

    Args:
        folder: the folder holding ``manifest.json`` and ``model.safetensors``.
        device: where the model runs. Default ``"cpu"``.

    Attributes:
        manifest: the manifest, as saved.
        precision: the Fabric precision plugin predictions run under: the run's
            ``hardware.precision`` (the manifest's ``precision``).
        model: the rebuilt :class:`~tlroutes.model.TransferModel`, in eval mode.
        heads: the heads' names, in the model's order.
        tasks: each head's :class:`~tlroutes.problem.Task` (kind, label names).
    """

    def __init__(self, folder: str | Path, *, device: str | torch.device = "cpu") -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.device = torch.device(device)
        # As the run evaluated: the weights in the dtype they trained in ("64-true",
        # "bf16-true"), the forward under the run's autocast for mixed precision; runs from
        # before the manifest recorded it trained in "32-true".
        self.precision = precision_plugin(self.manifest.get("precision", "32-true"),
                                          self.device.type)
        self.model = self.precision.convert_module(
            rebuild_model(self.manifest, self.folder).to(self.device))
        self.heads = list(self.manifest["heads"])
        self.tasks: dict[str, Task] = {k: task_from(h["task"])
                                       for k, h in self.manifest["heads"].items()}

    def __repr__(self) -> str:
        heads = ", ".join(f"{k}: {t.kind} {len(t.labels) or 1}" for k, t in self.tasks.items())
        return f"Predictor({self.folder}, route={self.manifest['route']}, heads={{{heads}}})"

    # -- pieces ----------------------------------------------------------------------------
    def _head(self, head: str | None) -> str:
        if head is None:
            if len(self.heads) == 1:
                return self.heads[0]
            raise ConfigError(f"This model has {len(self.heads)} heads ({', '.join(self.heads)});"
                              " say which with head=<name> (--head), or use the dict of all.")
        if head not in self.heads:
            raise ConfigError(f"Unknown head '{head}'.{did_you_mean(head, self.heads)} This "
                              f"model's heads: {', '.join(self.heads)}.")
        return head

    def _names(self, head: str | None) -> list[str]:
        return list(self.heads) if head is None and len(self.heads) > 1 else [self._head(head)]

    def inputs(self, data: Any, head: str | None = None) -> Inputs:
        """``data`` read as ``head``'s stem reads it (see :mod:`tlroutes.use.inputs`)."""
        pre = self.manifest["heads"][self._head(head)]["preprocessing"]
        if pre is None:
            raise ConfigError(f"The manifest of {self.folder} does not say how head "
                              f"'{self._head(head)}' reads data; pass a Split or a tensor.")
        return as_inputs(data, pre)

    def outputs(self, data: Any, head: str | None = None, *,
                batch_size: int | None = None) -> Tensor:
        """The head's raw outputs (logits, or values for regression) on ``data``, batched, on the
        CPU: float32 (float64 for a "64-true" run).

        Args:
            batch_size: samples per forward pass. Default None: as evaluation during training
                (``hardware.eval_batch_size``, else sized to memory).
        """
        from tlroutes.train.engine import evaluate_split

        name = self._head(head)
        stem = self.manifest["heads"][name]["stem"]
        x = data.x if isinstance(data, Inputs) else self.inputs(data, name).x
        return evaluate_split(self.model, lambda b: self.model(b, stem, name), x,
                              batch_size, precision=self.precision).cpu()

    def split(self, split: str = "test", head: str | None = None) -> Split:
        """A split of the run's own data for ``head``, loaded as the run loaded it (the same
        seed, and the splits the run folder kept)."""
        from tlroutes.config import DataSpec
        from tlroutes.data.load import load_problem

        if split not in SPLITS:
            raise ConfigError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
        name = self._head(head)
        pre = self.manifest["heads"][name]["preprocessing"]
        if pre is None:
            raise ConfigError(f"The manifest of {self.folder} does not record the data head "
                              f"'{name}' was trained on.")
        spec = DataSpec.model_validate(pre["data"])
        problem: Problem = load_problem(spec, pre["seed"], pre["role"], run_dir=self.folder)
        return getattr(problem, split)

    # -- predictions -------------------------------------------------------------------------
    def predict(self, data: Any, head: str | None = None, *,
                batch_size: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Predictions on ``data``: class names (classification), a 0/1 matrix over the labels
        (multilabel, each label on when its logit is above 0), or values (regression; ``(N,)``
        for one target, else ``(N, targets)``).

        Args:
            data: see :mod:`tlroutes.use.inputs`.
            head: which head. Default None: the only head, or, with several (Multi-Task
                Learning), a dict ``{head: predictions}`` of all of them.
            batch_size: see :meth:`outputs`.

        Raises:
            ConfigError: an unknown head. DataError: data that does not fit the model.
        """
        names = self._names(head)
        out = {n: self._decide(n, self.outputs(data, n, batch_size=batch_size)) for n in names}
        return out if len(names) > 1 else out[names[0]]

    def predict_proba(self, data: Any, head: str | None = None, *,
                      batch_size: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Probabilities ``(N, classes)`` (softmax) for classification, ``(N, labels)`` per
        label (sigmoid) for multilabel; columns in the order of ``tasks[head].labels``.
        Arguments as :meth:`predict`.

        Raises:
            ConfigError: a regression head (it has values, not probabilities).
        """
        names = self._names(head)
        out = {}
        for n in names:
            if self.tasks[n].kind == "regression":
                raise ConfigError(f"Head '{n}' is a regression: it predicts values, not "
                                  "probabilities; use predict().")
            out[n] = self._proba(n, self.outputs(data, n, batch_size=batch_size))
        return out if len(names) > 1 else out[names[0]]

    def predict_frame(self, data: Any, head: str | None = None, *,
                      batch_size: int | None = None) -> Any:
        """A pandas DataFrame of predictions, one row per sample: ``id`` (a file path or the
        row), then per head ``label`` and ``p_<class>`` (classification), ``<label>`` and
        ``p_<label>`` (multilabel) or ``value`` / ``<target>`` (regression); with several
        heads each column is prefixed ``<head>.``."""
        import pandas as pd

        names = self._names(head)
        columns: dict[str, Any] = {}
        ids = None
        for n in names:
            inputs = self.inputs(data, n) if not isinstance(data, (Split, Problem)) else None
            logits = self.outputs(inputs if inputs is not None else data, n,
                                  batch_size=batch_size)
            if ids is None:
                ids = inputs.ids if inputs is not None else list(range(len(logits)))
            prefix = f"{n}." if len(names) > 1 else ""
            task = self.tasks[n]
            decided = self._decide(n, logits)
            if task.kind == "classification":
                columns[f"{prefix}label"] = decided
                for k, label in enumerate(task.labels):
                    columns[f"{prefix}p_{label}"] = self._proba(n, logits)[:, k]
            elif task.kind == "multilabel":
                proba = self._proba(n, logits)
                for k, label in enumerate(task.labels):
                    columns[f"{prefix}{label}"] = decided[:, k]
                    columns[f"{prefix}p_{label}"] = proba[:, k]
            else:
                values = decided.reshape(len(logits), -1)
                targets = list(task.labels) or ["value"]
                for k, label in enumerate(targets):
                    columns[f"{prefix}{label}"] = values[:, k]
        return pd.DataFrame({"id": ids, **columns})

    def _decide(self, head: str, logits: Tensor) -> np.ndarray:
        task = self.tasks[head]
        if task.kind == "classification":
            return np.asarray(task.labels, dtype=object)[logits.argmax(1).numpy()]
        if task.kind == "multilabel":
            return (logits > 0).to(torch.int64).numpy()
        values = logits.numpy()
        return values[:, 0] if values.shape[1] == 1 else values

    def _proba(self, head: str, logits: Tensor) -> np.ndarray:
        if self.tasks[head].kind == "classification":
            return torch.softmax(logits, 1).numpy()
        return torch.sigmoid(logits).numpy()
