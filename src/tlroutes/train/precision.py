"""Numeric precision: which one a device can run, and evaluation under the run's precision.

``hardware.precision`` reaches training through Fabric's precision plugin: ``"-true"``
precisions cast the weights (``fabric.setup``) and the held data (the engine casts them once to
the weights' dtype), ``"-mixed"`` precisions run each forward pass under ``torch.autocast``.
Evaluation — validation, test metrics, the feature cache, :func:`tlroutes.load`'s predictions —
goes through the same plugin (:func:`evaluation_precision`), so that a model is measured as it
trained: inputs converted as Fabric's wrapped module converts them, the forward pass under
Fabric's autocast (or default dtype), and half-precision outputs cast to float32 before any
metric is computed on them.

What runs where (measured on CPU by ``tests/test_precision.py``; GPUs by what torch documents):

- CPU: every precision. Half precision is emulated there and slower than float32.
- CUDA: every precision; ``bf16-*`` only on GPUs that compute bfloat16 natively (Ampere or
  newer), refused up front on others.
- MPS (Apple): no ``64-true`` (MPS has no float64), refused up front.

On CPU, Fabric would silently train ``"16-mixed"`` as ``"bf16-mixed"``; torch ≥ 2.4 runs float16
autocast and gradient scaling on the CPU, so :func:`fabric_precision` gives Fabric that plugin
and the run trains in the precision its run file names.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tlroutes.errors import ConfigError

if TYPE_CHECKING:
    from lightning_fabric.plugins.precision import Precision

#: Every precision a run file may name (``hardware.precision``).
PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true")


def precision_problem(precision: str, device_type: str) -> str | None:
    """Why ``device_type`` (``"cpu"``, ``"cuda"``, ``"mps"``) cannot run ``precision``, in
    words that say what to use instead; None when it can."""
    if precision not in PRECISIONS:
        return (f"precision '{precision}' is unknown; use one of {', '.join(PRECISIONS)}.")
    if device_type == "mps" and precision == "64-true":
        return ("precision '64-true' needs float64, which Apple's MPS devices do not have; use "
                "'32-true' on MPS, or accelerator: cpu for float64.")
    if (device_type == "cuda" and precision.startswith("bf16")
            and not torch.cuda.is_bf16_supported(including_emulation=False)):
        name = torch.cuda.get_device_name()
        return (f"precision '{precision}' needs bfloat16, which this GPU ({name}) does not "
                "compute natively (Ampere or newer does); use '16-mixed' on it instead.")
    return None


def check_precision(precision: str, device_type: str) -> None:
    """Raise :class:`~tlroutes.errors.ConfigError` when ``device_type`` cannot run
    ``precision`` (see :func:`precision_problem`); called before anything trains."""
    problem = precision_problem(precision, device_type)
    if problem is not None:
        raise ConfigError(f"hardware.precision: {problem}")


def fabric_precision(precision: str, device_type: str) -> str | Precision:
    """What to pass Fabric as ``precision`` (or as a plugin) for ``precision`` on
    ``device_type``: the name itself, except ``"16-mixed"`` on the CPU, which Fabric would turn
    into ``"bf16-mixed"``: there a float16 autocast plugin with gradient scaling."""
    if precision == "16-mixed" and device_type == "cpu":
        from lightning_fabric.plugins.precision import MixedPrecision

        return MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler(device="cpu"))
    return precision


def precision_plugin(precision: str, device_type: str) -> Precision:
    """Fabric's precision plugin for ``precision`` on ``device_type`` (what a Fabric created
    with it uses), for evaluation outside a run (:func:`tlroutes.load`)."""
    from lightning_fabric.plugins.precision import (
        DoublePrecision,
        HalfPrecision,
        MixedPrecision,
        Precision,
    )

    check_precision(precision, device_type)
    if precision.endswith("-mixed"):
        return MixedPrecision(precision, "cpu" if device_type == "cpu" else device_type)
    if precision == "bf16-true":
        return HalfPrecision("bf16-true")
    if precision == "64-true":
        return DoublePrecision()
    return Precision()


_LOCK = threading.Lock()
_CURRENT: list[Precision] = []


def set_evaluation_precision(plugin: Precision | None) -> None:
    """Evaluate under ``plugin`` from now on in this process (the :class:`Trainer` sets its
    Fabric's); None returns to plain float32 evaluation."""
    with _LOCK:
        _CURRENT[:] = [] if plugin is None else [plugin]


def evaluation_precision() -> Precision:
    """The precision plugin evaluation goes through: the current run's, else plain ``32-true``."""
    with _LOCK:
        if _CURRENT:
            return _CURRENT[0]
    from lightning_fabric.plugins.precision import Precision

    return Precision()


#: The weights' dtype under each "-true" precision (Fabric's convert_module casts to it).
TRUE_DTYPES = {"64-true": torch.float64, "bf16-true": torch.bfloat16, "16-true": torch.float16}


def for_weights(plugin: Precision, dtype: torch.dtype | None) -> Precision:
    """``plugin``, or plain float32 evaluation when it is a "-true" precision whose dtype the
    model's weights (``dtype``) are not in: a model no stage has trained (and so cast) yet is
    evaluated in its own dtype, as before any precision was set."""
    wanted = TRUE_DTYPES.get(getattr(plugin, "precision", ""))
    if wanted is None or dtype is None or dtype == wanted:
        return plugin
    from lightning_fabric.plugins.precision import Precision

    return Precision()


def forward_in(plugin: Precision, forward, x: Tensor) -> Tensor:
    """``forward(x)`` as Fabric's wrapped module runs it under ``plugin`` (inputs converted,
    the forward under its autocast or default dtype), with bfloat16/float16 outputs cast to
    float32, so that metrics (accuracy, mean squared error …) are not summed in half
    precision. Float64 outputs stay float64."""
    with plugin.forward_context():
        out = forward(plugin.convert_input(x))
    return _at_least_float32(out)


def _at_least_float32(out):
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() and out.dtype.itemsize < 4 else out
    if isinstance(out, dict):
        return {k: _at_least_float32(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_at_least_float32(v) for v in out)
    return out
