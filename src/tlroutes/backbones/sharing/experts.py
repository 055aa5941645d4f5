"""Gated mixtures of experts: MMoE (Ma et al., KDD 2018) and PLE / CGC (Tang et al., RecSys 2020).

**What an expert is.** Each first-level expert is a full copy of the run's trunk (built anew by
the trunk factory: its own initialisation, or its own copy of the pretrained weights), reading
the shared stem's output. In the papers an expert is a feed-forward network over the input
features, and the "shared bottom" it replaces is the whole network below the task towers; in
tlroutes that network is the trunk (a CNN for images, a transformer for tokens — an MLP over
the stem's output would throw away the trunk's inductive bias for images and sequences), so an
expert is a trunk, and with one expert MMoE *is* hard sharing. Pick a smaller trunk
(``trunk_args``) to keep the cost of E experts down.

**What a gate reads.** Task k's gate is ``softmax(W_k x)`` (no bias, as in both papers) over
the input ``x``: the stem's output as a vector, averaged over its positions when it is an image,
a sequence or tokens (:func:`~tlroutes.backbones.sharing.base.pool_input`).

PLE's later extraction levels (``levels`` > 1) read feature vectors, so their experts are
``Linear(out_dim, out_dim) → ReLU`` blocks, as in the paper's recommender models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from tlroutes.backbones.sharing.base import (
    SharedFeatures,
    TaskSharing,
    TrunkFactory,
    check_tasks,
    make_experts,
    mix,
    pool_input,
    register_sharing,
)
from tlroutes.errors import ConfigError

#: The most experts (per kind, per level) and levels an architecture takes: each expert is a
#: whole trunk, and the size check builds every one (on the meta device) before refusing.
MAX_EXPERTS = 64
MAX_LEVELS = 16
Experts = Annotated[int, Field(ge=1, le=MAX_EXPERTS)]


@register_sharing("mmoe")
class MMoE(TaskSharing):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

    ``E`` expert trunks read the stem's output; task k's features are
    ``Σ_e softmax(W_k x)_e · expert_e(x)``. Experts are shared by every task; each task's gate
    is its own. With ``experts=1`` every gate weight is exactly 1 and the model is hard sharing.

    Parameter names: ``experts.<e>.*`` (trunk copies), ``gates.<task>.weight``
    (``(E, in_width)``).

    Args:
        make_trunk: builds one expert trunk per call.
        tasks: the task names (the heads' keys).
        experts: number of expert trunks, E, 1 to 64. Default ``4``.
    """

    def __init__(self, make_trunk: TrunkFactory, tasks: Sequence[str], *,
                 experts: Experts = 4) -> None:
        super().__init__()
        if experts < 1:
            raise ConfigError(f"mmoe needs experts >= 1, got {experts}.")
        self.tasks = check_tasks(tasks, "mmoe")
        self.experts = nn.ModuleList(make_experts(make_trunk, experts, "mmoe"))
        first = self.experts[0]
        self.out_dim, self.input_kind, self.in_width = (first.out_dim, first.input_kind,
                                                        first.in_width)
        self.gates = nn.ModuleDict(
            {t: nn.Linear(self.in_width, experts, bias=False) for t in self.tasks})

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> SharedFeatures:
        names = self._asked(tasks)
        outs = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, D)
        pooled = pool_input(x, self.input_kind)
        return SharedFeatures({t: mix(self.gates[t](pooled), outs) for t in names}, outs)

    def private_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.gates[task].parameters())

    def reference_trunk(self) -> nn.Module:
        return self.experts[0]


class _Level(nn.Module):
    """One customized gate control (CGC) level of PLE."""

    def __init__(self, make_expert, tasks: tuple[str, ...], shared: int, own: int,
                 gate_in: int, with_shared_gate: bool) -> None:
        super().__init__()
        self.shared_experts = nn.ModuleList(make_expert() for _ in range(shared))
        self.task_experts = nn.ModuleDict(
            {t: nn.ModuleList(make_expert() for _ in range(own)) for t in tasks})
        # task k's gate selects among [its own experts, the shared experts] (paper eq. 2-4)
        self.gates = nn.ModuleDict({t: nn.Linear(gate_in, own + shared, bias=False)
                                    for t in tasks})
        # the shared gate, below the last level, selects among every expert (paper eq. 6)
        self.shared_gate = (nn.Linear(gate_in, own * len(tasks) + shared, bias=False)
                            if with_shared_gate else None)


@register_sharing("ple")
class PLE(TaskSharing):
    """Progressive Layered Extraction (Tang et al., RecSys 2020); ``levels=1`` is its CGC.

    At each extraction level, ``shared_experts`` experts are shared by all tasks and each task
    has ``task_experts`` of its own; task k's gate mixes [its own experts, the shared experts],
    reading task k's input to the level. Below the last level a shared gate mixes *every*
    expert into the input of the next level's shared experts. The first level's experts are
    trunk copies reading the stem's output (all inputs are that output); later levels' experts
    are ``Linear(out_dim, out_dim) → ReLU`` over the previous level's outputs.

    With ``task_experts=0`` and one level, task k's gate mixes the shared experts only: MMoE
    with ``shared_experts`` experts.

    Parameter names: ``levels.<j>.shared_experts.<e>``, ``levels.<j>.task_experts.<task>.<e>``,
    ``levels.<j>.gates.<task>``, ``levels.<j>.shared_gate``.

    Private to task k (only its loss reaches them): its experts and gate at the last level, and
    its gate at the level before (whose output only its last-level experts and gate read).
    Everything else is shared: below the last level, task k's experts feed the shared gate.

    Args:
        make_trunk: builds one first-level expert per call.
        tasks: the task names (the heads' keys).
        shared_experts: shared experts per level, 1 to 64. Default ``2``.
        task_experts: experts of each task per level, 0 to 64. Default ``1``.
        levels: extraction levels, 1 to 16. Default ``1`` (CGC).
    """

    def __init__(self, make_trunk: TrunkFactory, tasks: Sequence[str], *,
                 shared_experts: Experts = 2,
                 task_experts: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 1,
                 levels: Annotated[int, Field(ge=1, le=MAX_LEVELS)] = 1) -> None:
        super().__init__()
        if shared_experts < 1 or task_experts < 0 or levels < 1:
            raise ConfigError("ple needs shared_experts >= 1, task_experts >= 0 and levels >= "
                              f"1; got {shared_experts}, {task_experts}, {levels}.")
        self.tasks = check_tasks(tasks, "ple")
        probe = make_trunk()
        self.out_dim, self.input_kind, self.in_width = (probe.out_dim, probe.input_kind,
                                                        probe.in_width)
        width = self.out_dim
        made = iter([probe])

        def first_expert() -> nn.Module:
            trunk = next(made, None) or make_trunk()
            if (trunk.out_dim, trunk.input_kind, trunk.in_width) != (
                    self.out_dim, self.input_kind, self.in_width):
                raise ConfigError("ple: the trunk factory built trunks of different widths.")
            return trunk

        def later_expert() -> nn.Module:
            return nn.Sequential(nn.Linear(width, width), nn.ReLU())

        self.levels = nn.ModuleList(
            _Level(first_expert if j == 0 else later_expert, self.tasks, shared_experts,
                   task_experts, self.in_width if j == 0 else width, j < levels - 1)
            for j in range(levels))

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> SharedFeatures:
        names = self._asked(tasks)
        last = len(self.levels) - 1
        # every task's input at the first level is the stem's output
        h_task = dict.fromkeys(self.tasks, x)
        h_shared = x
        for j, level in enumerate(self.levels):
            def gate_in(h: Tensor, first: bool = j == 0) -> Tensor:
                return pool_input(h, self.input_kind) if first else h

            shared_out = [e(h_shared) for e in level.shared_experts]
            wanted = names if j == last else self.tasks
            own_out = {t: [e(h_task[t]) for e in level.task_experts[t]] for t in wanted}
            new_task = {t: mix(level.gates[t](gate_in(h_task[t])),
                               torch.stack(own_out[t] + shared_out, 1)) for t in wanted}
            if level.shared_gate is not None:
                every = [o for t in self.tasks for o in own_out[t]] + shared_out
                h_shared = mix(level.shared_gate(gate_in(h_shared)), torch.stack(every, 1))
            h_task = new_task
        return SharedFeatures({t: h_task[t] for t in names}, None)

    def reference_trunk(self) -> nn.Module:
        return self.levels[0].shared_experts[0]

    def private_parameters(self, task: str) -> list[nn.Parameter]:
        last = self.levels[-1]
        params = [*last.task_experts[task].parameters(), *last.gates[task].parameters()]
        if len(self.levels) > 1:
            params += list(self.levels[-2].gates[task].parameters())
        return params
