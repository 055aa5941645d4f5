"""Sharing at every stage of a convolutional trunk: MTAN task attention (Liu et al., CVPR 2019)
and cross-stitch units (Misra et al., CVPR 2016).

Both need the trunk's stages, so both take the built-in convolutional trunks (``cnn2d``,
``cnn1d``: one ``conv → norm → ReLU`` per stage, then global average pooling); any other trunk
is refused with a :class:`ConfigError` that says which architectures fit it (MMoE, PLE).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tlroutes.backbones.sharing.base import (
    SharedFeatures,
    TaskSharing,
    TrunkFactory,
    check_tasks,
    make_experts,
    register_sharing,
)
from tlroutes.backbones.trunks import CNN1dTrunk, CNN2dTrunk, _ConvTrunk, _norm
from tlroutes.errors import ConfigError


def _conv_trunk(trunk: nn.Module, what: str) -> _ConvTrunk:
    if not isinstance(trunk, CNN1dTrunk | CNN2dTrunk):
        raise ConfigError(
            f"{what} shares a convolutional trunk stage by stage; it takes the built-in cnn2d or "
            f"cnn1d trunk, not {type(trunk).__name__}. For any other trunk use architecture: "
            "mmoe or ple (they mix whole trunks).")
    return trunk


def _norm_kind(trunk: _ConvTrunk) -> str:
    norm = trunk.stages[0].norm
    return ("batch" if isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d)
            else "group" if isinstance(norm, nn.GroupNorm) else "none")


def _pool(trunk: _ConvTrunk, h: Tensor) -> Tensor:
    """The trunk's own head: global average pooling, then its dropout."""
    return trunk.drop(h.flatten(2).mean(-1))


@register_sharing("mtan")
class MTAN(TaskSharing):
    """Multi-Task Attention Network (Liu, Johns and Davison, CVPR 2019) over a conv trunk.

    One shared trunk runs as it would alone. Each task has a soft attention module at every
    stage j: a mask ``a_j = sigmoid(norm(conv1×1(ReLU(norm(conv1×1(i_j))))))`` over the stage's
    channels, with ``i_1 = s_1`` and ``i_j = [s_j, f_j(â_{j-1})]`` for later stages, where
    ``s_j`` is the shared stage's output, ``â_j = a_j ⊙ s_j`` the task's attended features and
    ``f_j`` a ``conv → norm → ReLU`` shared by the tasks that brings ``â_{j-1}`` to stage j's
    channels and resolution (the paper's shared 3×3 block). A task's features are its last
    ``â`` pooled as the trunk pools. MTAN's blocks have several convolutions and its masks read
    a block's intermediate features; the built-in stages have one, so a mask reads the stage's
    output it gates. With all-ones masks each task's features are the shared trunk's.

    Parameter names: ``trunk.*`` (shared), ``shared_convs.<j-1>.*`` (the ``f_j``, shared),
    ``attention.<task>.<j>.*`` (private to the task).

    Args:
        make_trunk: builds the shared trunk (called once; cnn2d or cnn1d).
        tasks: the task names (the heads' keys).
    """

    def __init__(self, make_trunk: TrunkFactory, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks, "mtan")
        self.trunk = _conv_trunk(make_trunk(), "mtan")
        self.out_dim, self.input_kind, self.in_width = (self.trunk.out_dim,
                                                        self.trunk.input_kind,
                                                        self.trunk.in_width)
        dims, norm = self.trunk.dims, _norm_kind(self.trunk)
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        widths = [stage.conv.out_channels for stage in self.trunk.stages]
        first = self.trunk.stages[0].conv

        def attention(c_in: int, c: int) -> nn.Sequential:
            return nn.Sequential(OrderedDict(
                conv1=conv(c_in, c, 1), norm1=_norm(norm, c, dims), act=nn.ReLU(),
                conv2=conv(c, c, 1), norm2=_norm(norm, c, dims), gate=nn.Sigmoid()))

        self.shared_convs = nn.ModuleList(
            nn.Sequential(OrderedDict(
                conv=conv(widths[j - 1], widths[j], first.kernel_size,
                          stride=self.trunk.stages[j].conv.stride,
                          padding=first.padding, bias=norm == "none"),
                norm=_norm(norm, widths[j], dims), act=nn.ReLU()))
            for j in range(1, len(widths)))
        self.attention = nn.ModuleDict({
            t: nn.ModuleList(attention(c if j == 0 else 2 * c, c) for j, c in enumerate(widths))
            for t in self.tasks})

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> SharedFeatures:
        names = self._asked(tasks)
        attended: dict[str, Tensor] = {}
        h = x
        for j, stage in enumerate(self.trunk.stages):
            h = stage(h)
            for t in names:
                i = h if j == 0 else torch.cat([h, self.shared_convs[j - 1](attended[t])], 1)
                attended[t] = self.attention[t][j](i) * h
        return SharedFeatures({t: _pool(self.trunk, attended[t]) for t in names}, None)

    def private_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.attention[task].parameters())

    def reference_trunk(self) -> nn.Module:
        return self.trunk


@register_sharing("cross_stitch")
class CrossStitch(TaskSharing):
    """Cross-stitch networks (Misra, Shrivastava, Gupta and Hebert, CVPR 2016) over a conv trunk.

    One trunk per task (a column); after every stage j a cross-stitch unit replaces each
    column's activations by a learned linear combination of all columns' activations at that
    stage: ``x̃_k = Σ_l α^j_{kl} x_l``, one scalar per pair of tasks and stage. A task's
    features are its column's last stitched activations, pooled as the trunk pools. With
    ``α = I`` the columns are independent networks; the paper starts from ``α_kk = 0.9`` and
    the rest of each row summing to 0.1 (``self_weight``), and trains α with a learning rate
    10²–10³ times the network's because its SGD gradients are small; under Adam or AdamW (the
    default optimizer here) each α already moves about the learning rate per step whatever its
    gradient's scale, so α shares the network's rate (``param_groups`` can still scale
    ``trunk.stitch``).

    Every column reaches every task through the stitches, so no trunk parameter is private;
    the heads are each task's own.

    Parameter names: ``columns.<task>.*`` (one trunk per task), ``stitch.<j>`` (``K × K``).

    Args:
        make_trunk: builds one column per task (cnn2d or cnn1d).
        tasks: the task names (the heads' keys).
        self_weight: the initial weight of a column's own activations, in [0, 1]; the other
            columns share ``1 - self_weight`` equally. Default ``0.9``.
    """

    def __init__(self, make_trunk: TrunkFactory, tasks: Sequence[str], *,
                 self_weight: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= self_weight <= 1.0:
            raise ConfigError(f"cross_stitch: self_weight must lie in [0, 1], got {self_weight}.")
        self.tasks = check_tasks(tasks, "cross_stitch")
        columns = [_conv_trunk(c, "cross_stitch")
                   for c in make_experts(make_trunk, len(self.tasks), "cross_stitch")]
        self.columns = nn.ModuleDict(dict(zip(self.tasks, columns, strict=True)))
        first = columns[0]
        self.out_dim, self.input_kind, self.in_width = (first.out_dim, first.input_kind,
                                                        first.in_width)
        k = len(self.tasks)
        other = (1.0 - self_weight) / (k - 1) if k > 1 else 0.0
        init = torch.full((k, k), other)
        init.fill_diagonal_(self_weight if k > 1 else 1.0)
        self.stitch = nn.ParameterList(nn.Parameter(init.clone())
                                       for _ in range(len(first.stages)))

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> SharedFeatures:
        names = self._asked(tasks)
        hs = [x] * len(self.tasks)
        columns = list(self.columns.values())
        for j, alpha in enumerate(self.stitch):
            acts = torch.stack([c.stages[j](h) for c, h in zip(columns, hs, strict=True)])
            hs = list(torch.einsum("kl,l...->k...", alpha, acts).unbind(0))
        out = dict(zip(self.tasks, hs, strict=True))
        return SharedFeatures({t: _pool(self.columns[t], out[t]) for t in names}, None)

    def private_parameters(self, task: str) -> list[nn.Parameter]:
        return []

    def reference_trunk(self) -> nn.Module:
        return next(iter(self.columns.values()))
