r"""Gradient similarity: an auxiliary gradient counts only when it points the main task's way.

Du, Czarnecki, Jayakumar, Farajtabar, Pascanu & Lakshminarayanan, *Adapting Auxiliary Losses
Using Gradient Similarity*, 2018 (arXiv:1812.02224). With ``g_m`` the main task's gradient and
``g_a`` an auxiliary task's, both on the shared parameters::

    cos_a = g_m · g_a / (‖g_m‖ ‖g_a‖)
    unweighted (the paper's Algorithm 1):  d = g_m + Σ_a [cos_a > 0] g_a
    weighted   (the paper's variant):      d = g_m + Σ_a max(0, cos_a) g_a

Each head is trained by its own task's loss (the gate acts on the shared parameters only: an
auxiliary head reads nothing the main task needs). In a batch without a main-task label there is
no ``g_m`` to compare with, so no auxiliary gradient reaches the shared parameters (their heads
still learn).
"""

from __future__ import annotations

import numpy as np

from tlroutes.errors import ConfigError
from tlroutes.objectives.mtl.base import TaskBatch, choice
from tlroutes.objectives.mtl.gradients import GradientWeighting
from tlroutes.objectives.mtl.registry import register_weighting

MODES = ("unweighted", "weighted")


@register_weighting("gradsim", gradient_based=True, auxiliary=True)
class GradientSimilarity(GradientWeighting):
    """Gradient similarity (Du et al. 2018): ``d = g_m + Σ_a c_a g_a`` with ``c_a`` from cosines.

    Logs: ``weights`` = the coefficients (1 for the main task, ``c_a`` for each auxiliary) and
    ``cosines`` (CPU ``(K,)``, the cosine of each task's gradient with the main one; 0 for
    skipped tasks and when the main task is absent).

    Args:
        num_tasks: K.
        main: the main task's number (0 to K-1). Default 0; the Multi-Task Learning route sets
            it from ``importance:``.
        mode: ``"unweighted"`` (default: the paper's Algorithm 1, ``c_a = 1`` when
            ``cos_a > 0`` else 0) or ``"weighted"`` (``c_a = max(0, cos_a)``).
        on: ``"params"`` (default) or ``"features"``; see
            :class:`~tlroutes.objectives.mtl.gradients.GradientWeighting`.
    """

    def __init__(self, *, num_tasks: int, main: int = 0, mode: str = "unweighted",
                 on: str = "params") -> None:
        super().__init__(num_tasks=num_tasks, on=on)
        self.main = main_index(main, num_tasks)
        self.mode = choice("mode", mode, MODES)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, main={self.main}, mode={self.mode!r}"

    def _solve(self, gram: np.ndarray, batch: TaskBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        n = len(gram)
        beta = np.zeros(n)
        cosines = np.zeros(n)
        if self.main in batch.index:
            m = batch.index.index(self.main)
            norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
            for k in range(n):
                if norms[k] > 0 and norms[m] > 0:
                    cosines[k] = gram[m, k] / (norms[m] * norms[k])
            gate = cosines > 0 if self.mode == "unweighted" else np.clip(cosines, 0.0, None)
            beta = np.asarray(gate, dtype=np.float64)
            beta[m] = 1.0
        return beta, np.ones(n), {"cosines": batch.full(cosines)}


def main_index(main: int, num_tasks: int) -> int:
    """``main`` checked as a task number in ``0..num_tasks-1``."""
    if isinstance(main, bool) or not isinstance(main, int) or not 0 <= main < num_tasks:
        raise ConfigError(f"main must be the main task's number, an integer from 0 to "
                          f"{num_tasks - 1}, got {main!r}.")
    return main
