"""Devices, precision and processes, through Lightning Fabric.

Fabric gives one code path for CPU, one or several GPUs, and several processes or machines
(DDP; gloo on CPU, NCCL on GPU). A run started with ``devices > 1`` re-launches itself once per
device; a run started by ``torchrun`` or a cluster scheduler is picked up from its environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightning_fabric import Fabric


@dataclass
class Hardware:
    """Where and how a run trains.

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


def make_fabric(hw: Hardware) -> Fabric:
    """Create and launch the Fabric for ``hw``; call once per run, before building models."""
    threads = hw.threads or max(1, (os.cpu_count() or 1) // max(1, hw.devices))
    torch.set_num_threads(threads)
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
        precision=hw.precision,
    )
    fabric.launch()
    return fabric
