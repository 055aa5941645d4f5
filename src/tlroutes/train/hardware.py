"""Devices, precision and processes, through Lightning Fabric.

Fabric gives one code path for CPU, one or several GPUs, and several processes or machines
(DDP; gloo on CPU, NCCL on GPU). A run started with ``devices > 1`` re-launches itself once per
device; a run started by ``torchrun`` or a cluster scheduler is picked up from its environment.

:class:`~tlroutes.config.Hardware` (where and how a run trains) lives in the bottom layer, in
:mod:`tlroutes.config`, and is re-exported here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from tlroutes.config import Hardware, machine_cores
from tlroutes.train.precision import check_precision, fabric_precision

if TYPE_CHECKING:
    from lightning_fabric import Fabric


def make_fabric(hw: Hardware) -> Fabric:
    """Create and launch the Fabric for ``hw``; call once per run, before building models.

    Raises:
        ConfigError: the device cannot run ``hw.precision`` (see
            :func:`tlroutes.train.precision.precision_problem`), before anything trains.
    """
    device_type = accelerator_type(hw.accelerator)
    check_precision(hw.precision, device_type)
    precision = fabric_precision(hw.precision, device_type)
    torch.set_num_threads(hw.threads or default_threads(hw.devices))
    strategy = "ddp" if hw.distributed else "auto"
    if hw.distributed:
        from lightning_fabric.strategies import DDPStrategy

        # Objectives may leave some parameters unused in a step (e.g. an idle head).
        strategy = DDPStrategy(find_unused_parameters=True)
    from lightning_fabric import Fabric

    fabric = Fabric(
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.num_nodes,
        strategy=strategy,
        precision=precision if isinstance(precision, str) else None,
        plugins=None if isinstance(precision, str) else [precision],
    )
    fabric.launch()
    return fabric


def default_threads(processes: int = 1) -> int:
    """CPU threads per process when the run file names none: this process's cores divided among
    ``processes`` (default 1), at most ``OMP_NUM_THREADS`` where that is set to a positive count.

    The cap follows Lightning's rule that an explicit ``OMP_NUM_THREADS`` wins, so that several
    runs started side by side (test workers, a scheduler's jobs) do not each take every core.
    """
    threads = max(1, machine_cores() // max(1, processes))
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) > 0:
        threads = min(threads, int(cap))
    return threads


def accelerator_type(accelerator: str) -> str:
    """The device type (``"cpu"``, ``"cuda"``, ``"mps"``) Fabric picks for ``accelerator``
    (``"auto"`` and ``"gpu"`` as Fabric resolves them: Apple's MPS when present, then CUDA)."""
    from lightning_fabric.accelerators import CUDAAccelerator, MPSAccelerator

    if accelerator in ("auto", "gpu"):
        if MPSAccelerator.is_available():
            return "mps"
        if CUDAAccelerator.is_available():
            return "cuda"
        return "cpu" if accelerator == "auto" else "cuda"
    return accelerator
