"""A data block naming a held Python object (``dataset: python:<kind>-<key>``, see
:mod:`tlroutes.held`) → its problem, with the block's fields applied as for a file.

Kinds: ``arrays`` (``(x, y)``, ``y`` None for unlabelled data; as
:func:`~tlroutes.data.sources.python.from_arrays`), ``dataframe`` (as a table: ``label``,
``features``, ``text``, ``split_column``, ``domain_column``), ``dataset`` (a map-style torch
Dataset, read lazily; as :func:`~tlroutes.data.sources.python.from_dataset`) and ``problem`` (a
:class:`~tlroutes.problem.Problem`, used as it is: its splits are its own, so ``n``,
``classes`` and ``split`` are refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from tlroutes.data.sources.build import SourceOptions
from tlroutes.data.sources.python import from_arrays, from_dataset
from tlroutes.data.sources.tables import Columns, frame_problem
from tlroutes.errors import ConfigError, DataError
from tlroutes.held import PREFIX, lookup
from tlroutes.problem import Problem

if TYPE_CHECKING:
    from tlroutes.config import DataSpec

__all__ = ["HELD_KINDS", "held_problem"]

#: What a held data object can be.
HELD_KINDS: tuple[str, ...] = ("arrays", "dataframe", "dataset", "problem")

_DEFAULT_SPLIT = (0.6, 0.2, 0.2)

#: The domain name of held arrays, DataFrames and Datasets unless the block declares ``domain``:
#: one name for all, as nothing names where they came from. Two of them are then the same
#: domain unless measurement tells them apart (a file's domain is its own name instead).
PYTHON_DOMAIN = "python"


def held_problem(spec: DataSpec, options: SourceOptions, role: str,
                 tokenize: Callable[[list[str], int], torch.Tensor] | None) -> Problem:
    """The problem the held object ``spec.dataset`` names (``role``: its name and the key of
    its kept splits)."""
    kind = spec.dataset[len(PREFIX):].split("-", 1)[0]
    obj = lookup(spec.dataset, f"{role}.dataset")
    where = f"{role} ({kind} from Python)"
    source = {"python": kind, "name": spec.dataset}
    if kind == "problem":
        given = [f for f in ("n", "classes", "labels") if getattr(spec, f) is not None]
        if tuple(spec.split) != _DEFAULT_SPLIT:
            given.append("split")
        if given:
            raise ConfigError(f"{where}: a Problem keeps its own splits and classes; "
                              f"{', '.join(given)} cannot apply. Leave them out, or give the "
                              "arrays or DataFrame instead of a Problem.")
        obj.validate()
        return obj
    if kind == "arrays":
        x, y = obj
        return from_arrays(x, y, labels=options.labels, task=options.task,
                           modality=options.modality, name=role, split=options.split,
                           seed=options.seed, classes=options.classes, n=options.n,
                           domain=PYTHON_DOMAIN)
    if kind == "dataframe":
        cols = Columns(label=spec.label, features=spec.features, text=spec.text,
                       text_length=spec.text_length, split_column=spec.split_column,
                       domain_column=spec.domain_column, domain_value=spec.domain_value)
        if spec.domain_value is None:  # else the domain is named by its value, as for a file
            options = replace(options, domain=PYTHON_DOMAIN)
        return frame_problem(obj, cols, options, name=role,
                             where=where, key=role, source=source, tokenize=tokenize)
    if kind == "dataset":
        return from_dataset(obj, labels=options.labels, task=options.task,
                            modality=options.modality, name=role, split=options.split,
                            seed=options.seed, classes=options.classes, n=options.n,
                            domain=PYTHON_DOMAIN)
    raise DataError(f"{where}: '{spec.dataset}' is no held data (kinds: "
                    f"{', '.join(HELD_KINDS)}).")
