"""``tlroutes.fit``: a whole transfer run from Python, with no run file.

::

    import tlroutes

    result = tlroutes.fit(route="task_fine_tuning", source=(x_src, y_src),
                          target=(x_tgt, y_tgt), model="timm:resnet18", epochs=5,
                          out="runs/pets")
    result.summary.gain               # the gain over the same model trained from scratch
    result.predict(x_new)             # class names (tlroutes.load(result.run_dir).predict)

``fit`` writes the run file that its arguments describe and runs it through the same runner as
``tlroutes run`` (:func:`tlroutes.runner.run`): the same planning (``route="auto"``), baseline,
run folder, resume and report. Data and networks that exist only as Python objects are held
for the run (:mod:`tlroutes.held`) and named in the saved ``run.yaml`` as ``python:<kind>-<key>``
— so the folder says where they came from. Arrays, DataFrames, in-memory Problems and modules
are keyed by their content: giving the same objects again with ``resume=True`` continues a
stopped run, in this process or a new one. A torch Dataset (or a lazily read Problem) is keyed
by identity and resumes only in the process that started the run; ``tlroutes run --resume`` from
a shell cannot read Python objects (save the data to a file for that).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from tlroutes.config import RunSpec, parse_run
from tlroutes.errors import ConfigError, shorten
from tlroutes.held import content_key, hold
from tlroutes.problem import Problem
from tlroutes.routes.registry import route_name
from tlroutes.runner import Resolved, resolve
from tlroutes.runner import run as run_spec
from tlroutes.summary import Summary

if TYPE_CHECKING:
    import numpy as np

    from tlroutes.use.predictor import Predictor

__all__ = ["FitResult", "fit"]

#: The trunk ``fit`` picks when ``model`` is None, by the target data's modality.
DEFAULT_TRUNKS: Mapping[str, str] = {"image": "cnn2d", "signal": "cnn1d", "tabular": "mlp",
                                     "text": "transformer"}

_DATA_TYPES = ("a path or built-in name (str / Path), (x, y) arrays or tensors, x alone "
               "(unlabelled), a pandas DataFrame (with label=), a torch Dataset, a "
               "tlroutes Problem, or a run-file data block (dict)")


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        summary: the run's :class:`~tlroutes.summary.Summary` (metrics, baseline, gain; mean and
            spread over seeds when ``seeds > 1``), as ``summary.json`` holds it.
        run_dir: the run folder.
        report: the path of the run's ``report.html``.
        spec: the run file ``fit`` ran (``run.yaml`` holds its resolved form).
    """

    summary: Summary
    run_dir: Path
    report: Path
    spec: RunSpec

    @cached_property
    def predictor(self) -> Predictor:
        """The trained model as :func:`tlroutes.load` gives it (the first seed's)."""
        from tlroutes.use.predictor import load

        return load(self.run_dir)

    @property
    def model(self) -> nn.Module:
        """The trained :class:`~tlroutes.model.TransferModel` (stems → trunk → heads), in eval
        mode, rebuilt from the run folder."""
        return self.predictor.model

    def predict(self, data: Any, head: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Predictions on ``data`` (any source ``fit`` takes for training): class names, a 0/1
        label matrix (multilabel) or values (regression); see
        :meth:`tlroutes.use.predictor.Predictor.predict`."""
        return self.predictor.predict(data, head)

    def predict_proba(self, data: Any, head: str | None = None
                      ) -> np.ndarray | dict[str, np.ndarray]:
        """Class probabilities on ``data``; see
        :meth:`tlroutes.use.predictor.Predictor.predict_proba`."""
        return self.predictor.predict_proba(data, head)


def fit(
    *,
    route: str = "auto",
    target: Any = None,
    source: Any = None,
    problems: Mapping[str, Any] | None = None,
    model: str | nn.Module | None = None,
    trunk_args: Mapping[str, Any] | None = None,
    label: str | None = None,
    source_args: Mapping[str, Any] | None = None,
    target_args: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    recipe: Mapping[str, Any] | None = None,
    baseline: bool = True,
    seed: int = 0,
    seeds: int = 1,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    run: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train a transfer route on Python data and return the result, as ``tlroutes run`` would.

    Args:
        route: one of the eight routes (id or title, e.g. ``"task_fine_tuning"``; ``tlroutes
            routes`` lists them) or ``"auto"``: planned first from the data (:func:`tlroutes.plan`)
            and saved as ``plan.json``. Default ``"auto"``.
        target: the problem the model is for. Any of: a path (table, ``.npz``, image folder,
            ``datasets`` folder) or built-in name (``"digits"``); ``(x, y)`` numpy arrays or
            tensors (``x`` alone: unlabelled, e.g. a Domain Adaptation target); a pandas
            DataFrame (one row per sample, the label column named by ``label``); a map-style
            torch Dataset of ``(input, target)`` items; a :class:`~tlroutes.problem.Problem`
            (used with its own splits); or a run-file data block as a dict
            (``{"dataset": "digits", "classes": [5, 6]}``). Required unless ``problems``.
        source: the problem knowledge comes from, any of the same. Default None: no source
            problem (``source: null``: the trunk's pretrained weights are the source; routes
            that need source data say so).
        problems: the simultaneous routes' problems (Dataset Merging, Weight Sharing,
            Multi-Task Learning), name → data as for ``target``; give them instead of
            ``source`` and ``target``. Default None.
        model: the trunk: a name (``"cnn2d"``, ``"timm:resnet18"``, ``"hf:<folder or hub id>"``,
            ``"module:pkg.mod:factory"``; see the run file's ``model.trunk``) or an
            ``nn.Module`` (a trunk, or any network, wrapped with
            :func:`~tlroutes.backbones.pretrained.wrap.wrap_trunk`; each model the run builds is
            a copy, your module is left untouched). Default None: by the target's modality,
            ``cnn2d`` (images), ``cnn1d`` (signals), ``mlp`` (tables, arrays ``(N, D)``) or
            ``transformer`` (text); with ``problems``, by the first problem's.
        trunk_args: the named trunk's arguments (e.g. ``{"pretrained": True}``). Default none.
        label: the label column of DataFrames and tables given as source or target. Default
            None: a column named ``label``.
        source_args, target_args: more fields of that data block (run file ``source:`` /
            ``target:``: ``task``, ``labels``, ``classes``, ``n``, ``split``, ``features``,
            ``text``, ``domain`` …). E.g. ``{"task": "regression"}`` for real-valued targets.
            Default none.
        epochs: the length of every training stage, in passes over its training data (source,
            target and, for simultaneous routes, the joint stage). Default None: the run file's
            default (10).
        batch_size: samples per step of every stage. Default None: 64.
        lr: the base learning rate of every stage. Default None: 1e-3.
        recipe: the route's own settings (the run file's ``recipe:``). Default none.
        baseline: also train the model from scratch on the target with the same budget, and
            report the gain. Default True.
        seed: the run's seed (data splits, initialisation, batches). Default 0.
        seeds: repeat the run for seeds ``seed .. seed + seeds - 1`` and report mean ± spread.
            Default 1.
        out: the run folder. Default None: ``tlroutes-runs/fit-<date>-<time>`` in the current
            folder.
        resume: continue a stopped run in ``out`` (give the same data and arguments). Default
            False, which refuses a folder that already holds a run.
        progress: show training progress. Default False.
        run: any other run-file fields, merged last (``hardware``, ``tracking``,
            ``source_training`` …), as a dict. Default none.

    Returns:
        A :class:`FitResult`: ``summary``, ``model``, ``report``, ``run_dir``, ``predict``.

    Raises:
        ConfigError: an argument of the wrong type or value (the message names it), or a run
            the runner refuses (as for a run file).
        DataError: data the sources cannot read (as for a run file).
    """
    _check_args(route=route, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                seeds=seeds, baseline=baseline, resume=resume, progress=progress)
    route = "auto" if route == "auto" else route_name(route)
    if (target is None) == (problems is None):
        raise ConfigError("fit: give target (and source), or problems for a simultaneous "
                          "route — one of the two.")
    if problems is not None and source is not None:
        raise ConfigError("fit: give source and target, or problems — not both.")
    if source is None and source_args:
        raise ConfigError("fit: source_args was given but source is None.")
    data: dict[str, Any] = {"route": route, "seed": seed, "seeds": seeds, "baseline": baseline}
    if problems is None:
        data["target"] = _data_block(target, "target", label, target_args)
        data["source"] = (None if source is None
                          else _data_block(source, "source", label, source_args))
    else:
        data["problems"] = {str(name): _data_block(value, str(name), label, None)
                            for name, value in _mapping(problems, "problems").items()}
    first = target if problems is None else next(iter(problems.values()), None)
    data["model"] = {"trunk": _trunk_name(model, first),
                     "trunk_args": dict(trunk_args or {})}
    if recipe is not None:
        data["recipe"] = dict(_mapping(recipe, "recipe"))
    extra = _mapping(run or {}, "run")
    for key, value in extra.items():
        data[key] = ({**data[key], **value} if isinstance(value, Mapping)
                     and isinstance(data.get(key), Mapping) else value)
    resolved = resolve(parse_run(data, source="tlroutes.fit"))  # plans a route="auto" run
    train = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr))
             if v is not None}
    if train:  # into the stages the (planned) route reads, under what `run` set itself
        blocks = getattr(resolved.module, "RUN_FILE_BLOCKS", None)
        # the blocks given only (check_blocks refuses a given block the route does not read)
        data = resolved.spec.model_dump(mode="json", exclude_unset=True)
        for stage in ("source_training", "target_training", "training"):
            if blocks is None or stage in blocks:
                own = extra.get(stage) or {}
                data.setdefault(stage, {}).update({k: v for k, v in train.items() if k not in own
                                    and not (k == "epochs" and "steps" in own)})
        again = resolve(parse_run(data, source="tlroutes.fit"))
        resolved = Resolved(again.spec, again.module, again.recipe, resolved.plan)
    folder = Path(out) if out is not None else Path("tlroutes-runs") / time.strftime(
        "fit-%Y%m%d-%H%M%S")
    summary = run_spec(resolved, folder, resume=resume, progress=progress)
    return FitResult(summary=summary, run_dir=folder, report=folder / "report.html",
                     spec=resolved.spec)


def _check_args(**args: Any) -> None:
    if not isinstance(args["route"], str):
        raise ConfigError(f"fit: route must be a route's name or 'auto', got "
                          f"{type(args['route']).__name__}.")
    for name in ("epochs", "batch_size", "seeds"):
        value = args[name]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ConfigError(f"fit: {name} must be a positive integer, got "
                              f"{shorten(value, quote=True)}.")
    seed = args["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"fit: seed must be a non-negative integer, got "
                          f"{shorten(seed, quote=True)}.")
    lr = args["lr"]
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
        raise ConfigError(f"fit: lr must be a positive number, got {shorten(lr, quote=True)}.")
    for name in ("baseline", "resume", "progress"):
        if not isinstance(args[name], bool):
            raise ConfigError(f"fit: {name} must be True or False, got "
                              f"{shorten(args[name], quote=True)}.")


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"fit: {name} must be a dict, got {type(value).__name__}.")
    return value


def _data_block(value: Any, role: str, label: str | None,
                extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run file's data block for ``value``, holding a Python object when it is one."""
    block: dict[str, Any]
    if isinstance(value, Mapping):
        block = dict(value)
    elif isinstance(value, str | Path):
        block = {"dataset": str(value)}
    else:
        block = {"dataset": _hold_data(value, role)}
    if label is not None and "label" not in block:
        block["label"] = label
    block.update(_mapping(extra or {}, f"{role}_args"))
    return block


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__len__")


def _hold_data(value: Any, role: str) -> str:
    import numpy as np

    if isinstance(value, Problem):
        return hold(value, kind="problem", key=_problem_key(value))
    if isinstance(value, tuple) and len(value) in (1, 2) and _is_array(value[0]):
        x, y = value[0], (value[1] if len(value) == 2 else None)
        if y is not None and not (_is_array(y) or isinstance(y, list)):
            raise ConfigError(f"fit: {role}=(x, y): y must be an array, a tensor or a list, got "
                              f"{type(y).__name__}.")
        return hold((x, y), kind="arrays",
                    key=content_key(_as_array(x), None if y is None else _as_array(y)))
    if _is_array(value) and not _is_frame(value):
        return hold((value, None), kind="arrays", key=content_key(_as_array(value), None))
    if _is_frame(value):
        import pandas as pd

        hashed = pd.util.hash_pandas_object(value, index=True).to_numpy()
        return hold(value, kind="dataframe",
                    key=content_key(hashed, [str(c) for c in value.columns],
                                    [str(t) for t in value.dtypes]))
    if hasattr(value, "__getitem__") and hasattr(value, "__len__") and not isinstance(
            value, list | tuple | dict | np.ndarray):
        return hold(value, kind="dataset",
                    key=f"{type(value).__name__.lower()}{len(value)}x{id(value):x}")
    raise ConfigError(f"fit: {role} must be {_DATA_TYPES}; got {type(value).__name__}.")


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


def _as_array(value: Any) -> Any:
    import numpy as np

    if hasattr(value, "detach"):
        return value
    return np.asarray(value)


def _problem_key(problem: Problem) -> str:
    if any(s.is_lazy for s in problem.splits().values()):
        return f"lazy{id(problem):x}"
    parts: list[Any] = [problem.name, problem.task.kind, list(problem.task.labels),
                        problem.domain.name]
    for split in problem.splits().values():
        parts += [split.x, split.y]
    return content_key(*parts)


def _trunk_name(model: str | nn.Module | None, target: Any) -> str:
    if model is None:
        return DEFAULT_TRUNKS.get(_modality(target) or "", "cnn2d")
    if isinstance(model, str):
        return model
    if isinstance(model, nn.Module):
        trunk = model if all(hasattr(model, a) for a in ("out_dim", "input_kind", "in_width")) \
            else _wrap(model)
        state = trunk.state_dict()
        key = content_key(type(trunk).__qualname__, trunk.input_kind, list(state),
                          list(state.values()))
        return hold(copy.deepcopy(trunk), kind="module", key=key)
    raise ConfigError(f"fit: model must be a trunk name (e.g. 'cnn2d', 'timm:resnet18', "
                      f"'hf:<folder>') or a torch nn.Module, got {type(model).__name__}.")


def _wrap(module: nn.Module) -> nn.Module:
    """A plain network as a trunk, reading what its first layer reads."""
    from tlroutes.backbones.pretrained.wrap import wrap_trunk

    kinds = {nn.Conv2d: "image", nn.Conv1d: "sequence", nn.Linear: "vector"}
    for layer in module.modules():
        for cls, kind in kinds.items():
            if type(layer) is cls:
                return wrap_trunk(module, input_kind=kind)
    raise ConfigError(f"fit: model {type(module).__name__} has no Conv2d, Conv1d or Linear layer "
                      "to tell what it reads; wrap it yourself: model=wrap_trunk(module, "
                      "input_kind='image' | 'sequence' | 'tokens' | 'vector').")


def _modality(target: Any) -> str | None:
    """The target's modality when it can be told without loading it."""
    if isinstance(target, Problem):
        return target.domain.modality
    if _is_frame(target):
        return "tabular"
    x = target[0] if isinstance(target, tuple) and target else target
    if _is_array(x) and not _is_frame(x):
        return {2: "tabular", 3: "signal", 4: "image"}.get(len(x.shape))
    return None
