"""Data: built-in datasets with domain shifts and task variants, splits, and shift functions.

- :func:`load_builtin` — ``digits`` (8×8 images) or ``mnist1d`` (length-40 signals) as a
  :class:`~tlroutes.problem.Problem`, with a task variant (:data:`TASK_VARIANTS`: classification,
  the multilabel ``properties`` or the ``position`` regression), a shift (:data:`IMAGE_SHIFTS`,
  :data:`SIGNAL_SHIFTS`) and an optional ``canvas`` (samples pasted at random places on a larger
  zero canvas; the domain then depends on the canvas, never on the task variant).
- Image shifts as pure tensor functions on ``(N, C, H, W)`` batches: :func:`rotate`,
  :func:`rescale`, :func:`blur`, :func:`invert`, :func:`add_noise`.
- Seeded stratified splitting: :func:`split_indices`, :func:`stratified_order`.
- A user's data from Python (:mod:`tlroutes.data.sources.python`): :func:`from_arrays`,
  :func:`from_dataframe`, :func:`from_dataset`; from files, see :mod:`tlroutes.data.sources`.
"""

from tlroutes.data.builtin import BUILTIN_DATASETS, load_builtin
from tlroutes.data.shifts import (
    IMAGE_SHIFTS,
    SIGNAL_SHIFTS,
    add_noise,
    blur,
    invert,
    rescale,
    rotate,
)
from tlroutes.data.sources.python import from_arrays, from_dataframe, from_dataset
from tlroutes.data.splits import seeded_generator, split_indices, stratified_order
from tlroutes.data.variants import TASK_VARIANTS

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_SHIFTS",
    "SIGNAL_SHIFTS",
    "TASK_VARIANTS",
    "add_noise",
    "blur",
    "from_arrays",
    "from_dataframe",
    "from_dataset",
    "invert",
    "load_builtin",
    "rescale",
    "rotate",
    "seeded_generator",
    "split_indices",
    "stratified_order",
]
