r"""Uncertainty weighting (UW): learned homoscedastic task uncertainty.

Kendall, Gal & Cipolla, *Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry
and Semantics*, CVPR 2018. With a learned log-variance ``s_k = log σ_k²`` per task::

    L = Σ_k  a_k · exp(−s_k) · L_k  +  b_k · s_k

The default ``a_k = b_k = 1`` is the form used in practice (and by most reimplementations): for a
fixed loss the optimum is ``s_k = log L_k``, i.e. the weight ``exp(−s_k) = 1 / L_k``. The paper's
own factors follow from a Gaussian likelihood for regression (``1/(2σ²) L + log σ``: ``a = b = ½``,
same optimum ``exp(−s) = 1/L``) and a scaled softmax for classification (``1/σ² L + log σ``:
``a = 1, b = ½``, optimum ``exp(−s) = 1/(2L)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tlroutes.checks import finite
from tlroutes.errors import ConfigError, did_you_mean
from tlroutes.objectives.mtl.base import TaskBatch, Weighting
from tlroutes.objectives.mtl.registry import register_weighting


@register_weighting("uw")
class UncertaintyWeighting(Weighting):
    """Uncertainty weighting: ``L = Σ_k a_k exp(−s_k) L_k + b_k s_k`` with learned ``s_k``.

    The ``s_k`` are parameters (``log_vars``, in the default float dtype): give
    ``weighting.parameters()`` to the optimiser. A skipped task's ``s_k`` gets no gradient.

    Args:
        num_tasks: K.
        kinds: None (default: ``a = b = 1`` for every task), or one of ``"regression"``,
            ``"classification"`` per task for the paper's factors.
        init_log_var: the initial ``s_k``. Default 0.0 (weights 1, i.e. equal weighting).
    """

    _FACTORS = {"regression": (0.5, 0.5), "classification": (1.0, 0.5)}

    def __init__(
        self, *, num_tasks: int, kinds: Sequence[str] | None = None, init_log_var: float = 0.0
    ) -> None:
        super().__init__(num_tasks=num_tasks)
        init_log_var = finite("init_log_var", init_log_var)
        if kinds is None:
            a, b = [1.0] * num_tasks, [1.0] * num_tasks
        else:
            kinds = list(kinds)
            if len(kinds) != num_tasks:
                raise ConfigError(f"kinds must name {num_tasks} tasks, got {len(kinds)}.")
            for kind in kinds:
                if kind not in self._FACTORS:
                    raise ConfigError(
                        f"Unknown task kind '{kind}' for uncertainty weighting; choose "
                        f"'regression' or 'classification'.{did_you_mean(kind, self._FACTORS)}"
                    )
            a = [self._FACTORS[k][0] for k in kinds]
            b = [self._FACTORS[k][1] for k in kinds]
        self.kinds = kinds
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init_log_var)))
        self.register_buffer("loss_factor", torch.tensor(a), persistent=False)
        self.register_buffer("reg_factor", torch.tensor(b), persistent=False)

    def _backward(self, batch: TaskBatch) -> dict:
        idx = torch.tensor(batch.index, device=self.log_vars.device)
        s = self.log_vars[idx]
        w = self.loss_factor[idx] * torch.exp(-s)
        self._backward_weighted(batch, w, extra=(self.reg_factor[idx] * s).sum())
        return {"weights": batch.full(w), "log_vars": self.log_vars.detach().cpu().clone()}
