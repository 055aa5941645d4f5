r"""TorchJD's aggregators as multi-task weightings (the optional ``torchjd`` extra).

TorchJD (Quinton & Rey, *Jacobian Descent for Multi-Objective Optimization*, 2024;
https://torchjd.org) turns the Jacobian ``G`` (K task gradients, one per row) into one update
``d = βᵀ G``. Its Gramian-based aggregators compute ``β`` from ``M = G Gᵀ`` alone, which is
exactly what every :class:`~tlroutes.objectives.mtl.gradients.GradientWeighting` solves: here
TorchJD's own Gramian weighting computes ``β`` on the same float64 Gram matrix the built-in
methods use, and the update is written as theirs (``on="features"`` included). Heads get their own
task's gradient (``h_k = 1``), as TorchJD's ``mtl_backward`` gives them. With ``π_G(x)`` the
projection of ``x`` onto the dual cone ``{y : G y ≥ 0}`` and ``u`` the preference vector (default
``1/K`` each):

- ``upgrad``: ``d = Σ_k u_k π_G(g_k)`` — Quinton & Rey, *Jacobian Descent for Multi-Objective
  Optimization*, 2024 (arXiv:2406.16232).
- ``dualproj``: ``d = π_G(Σ_k u_k g_k)`` — Lopez-Paz & Ranzato, *Gradient Episodic Memory for
  Continual Learning*, NeurIPS 2017, Eq. 11.
- ``imtl_g``: ``d = Σ_k α_k g_k``, ``α ∝ M⁺ (‖g_1‖, …, ‖g_K‖)``, ``Σ_k α_k = 1`` — Liu et al.,
  *Towards Impartial Multi-task Learning*, ICLR 2021.
- ``aligned_mtl``: ``d = Σ_k α_k g_k``, ``α = √λ_min · V Λ^{-½} Vᵀ u`` — Senushkin, Patakin,
  Kuznetsov & Konushin, *Independent Component Alignment for Multi-Task Learning*, CVPR 2023.
- ``fairgrad``: ``d = Σ_k α_k g_k``, ``M α = α^{−1/a}`` — Ban & Ji, *Fair Resource Allocation in
  Multi-Task Learning*, ICML 2024.

(``M = V Λ Vᵀ`` is the eigendecomposition of the Gram matrix on its numerical rank.) UPGrad and
DualProj solve their projections with ``quadprog``; FairGrad uses scipy. TorchJD is imported only
when one of these is built; without it the build fails with a :class:`ConfigError` that says to
``pip install 'tlroutes[torchjd]'``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tlroutes.errors import ConfigError
from tlroutes.objectives.mtl.base import TaskBatch, choice, positive
from tlroutes.objectives.mtl.gradients import GradientWeighting
from tlroutes.objectives.mtl.registry import register_weighting

_INSTALL = "pip install 'tlroutes[torchjd]'"


def torchjd_aggregation() -> Any:
    """The ``torchjd.aggregation`` module, or :class:`ConfigError` saying how to install it."""
    try:
        from torchjd import aggregation
    except ImportError as exc:
        raise ConfigError(
            f"TorchJD's aggregators need the optional package torchjd, which is not installed. "
            f"Install it with: {_INSTALL}"
        ) from exc
    return aggregation


class TorchJDWeighting(GradientWeighting):
    """Base: a TorchJD Gramian weighting gives ``β`` from the float64 Gram matrix.

    Subclasses implement :meth:`_make`, which builds TorchJD's weighting for the active tasks.

    Args:
        num_tasks: K.
        on: ``"params"`` (default) or ``"features"``; see
            :class:`~tlroutes.objectives.mtl.gradients.GradientWeighting`.
    """

    def __init__(self, *, num_tasks: int, on: str = "params") -> None:
        super().__init__(num_tasks=num_tasks, on=on)

    def _finish_init(self) -> None:
        """Build TorchJD's weighting for all K tasks now, so a missing package fails at build."""
        try:
            self._all_tasks = self._make(torchjd_aggregation(), list(range(self.num_tasks)))
        except ImportError as exc:  # TorchJD itself is there, a solver it needs is not
            raise ConfigError(
                f"The '{self.name}' weighting: {exc}. Install with: {_INSTALL}"
            ) from exc

    @abc.abstractmethod
    def _make(self, aggregation: Any, active: list[int]) -> Any:
        """TorchJD's Gramian weighting for the tasks ``active`` (their numbers, in order)."""

    def _solve(self, gram: np.ndarray, batch: TaskBatch) -> tuple[np.ndarray, np.ndarray, dict]:
        inner = (
            self._all_tasks
            if len(batch.index) == self.num_tasks
            else self._make(torchjd_aggregation(), batch.index)
        )
        with torch.no_grad():
            beta = inner(torch.from_numpy(gram))
        return beta.double().cpu().numpy(), np.ones(len(gram)), {}


def _pref_vector(values: Sequence[float] | None, num_tasks: int) -> list[float] | None:
    """A checked preference vector (K positive numbers), or None for TorchJD's default ``1/K``."""
    if values is None:
        return None
    values = [positive("pref_vector entries", v) for v in values]
    if len(values) != num_tasks:
        raise ConfigError(f"pref_vector must have {num_tasks} entries (one per task), got "
                          f"{len(values)}.")
    return values


def _pref_tensor(pref: list[float] | None, active: list[int]) -> Tensor | None:
    # float64: the weightings run on the float64 Gram matrix and keep its dtype
    return None if pref is None else torch.tensor([pref[k] for k in active], dtype=torch.float64)


class _PreferenceWeighting(TorchJDWeighting):
    """A TorchJD weighting whose one setting is a preference vector over the tasks (UPGrad,
    DualProj); :attr:`_torchjd_weighting` names TorchJD's class."""

    _torchjd_weighting: str

    def __init__(
        self, *, num_tasks: int, pref_vector: Sequence[float] | None = None, on: str = "params"
    ) -> None:
        super().__init__(num_tasks=num_tasks, on=on)
        self.pref_vector = _pref_vector(pref_vector, num_tasks)
        self._finish_init()

    def _make(self, aggregation: Any, active: list[int]) -> Any:
        make = getattr(aggregation, self._torchjd_weighting)
        return make(pref_vector=_pref_tensor(self.pref_vector, active))


@register_weighting("upgrad", gradient_based=True, extra="torchjd")
class UPGrad(_PreferenceWeighting):
    """UPGrad: ``d = Σ_k u_k π_G(g_k)``, each task gradient projected onto the dual cone of all.

    The update conflicts with no task (``G d ≥ 0``) and, with the default ``u``, treats tasks
    alike. TorchJD's ``UPGradWeighting`` with its quadprog projector.

    Args:
        num_tasks: K.
        pref_vector: the weights ``u`` of the projected gradients, K positive numbers; None
            (default) is ``1/K`` each.
        on: ``"params"`` (default) or ``"features"``.
    """

    _torchjd_weighting = "UPGradWeighting"


@register_weighting("dualproj", gradient_based=True, extra="torchjd")
class DualProj(_PreferenceWeighting):
    """DualProj: ``d = π_G(Σ_k u_k g_k)``, the averaged gradient projected onto the dual cone.

    The closest update to the average that conflicts with no task (GEM's projection). TorchJD's
    ``DualProjWeighting`` with its quadprog projector.

    Args:
        num_tasks: K.
        pref_vector: the weights ``u`` of the average, K positive numbers; None (default) is
            ``1/K`` each.
        on: ``"params"`` (default) or ``"features"``.
    """

    _torchjd_weighting = "DualProjWeighting"


@register_weighting("imtl_g", gradient_based=True, extra="torchjd")
class IMTLG(TorchJDWeighting):
    """IMTL-G: ``d = Σ α_k g_k`` with ``α ∝ M⁺ (‖g_1‖, …, ‖g_K‖)``, ``Σ α_k = 1``.

    The update has the same projection on every task's unit gradient (``d · g_k / ‖g_k‖`` equal
    for all k): no task is favoured by its gradient's scale. TorchJD's ``IMTLGWeighting``
    (a pseudo-inverse, so linearly dependent gradients are allowed).

    Args:
        num_tasks: K.
        on: ``"params"`` (default) or ``"features"``.
    """

    def __init__(self, *, num_tasks: int, on: str = "params") -> None:
        super().__init__(num_tasks=num_tasks, on=on)
        self._finish_init()

    def _make(self, aggregation: Any, active: list[int]) -> Any:
        return aggregation.IMTLGWeighting()


@register_weighting("aligned_mtl", gradient_based=True, extra="torchjd")
class AlignedMTL(TorchJDWeighting):
    """Aligned-MTL: ``α = √σ V Λ^{-½} Vᵀ u`` with ``M = V Λ Vᵀ``: the task gradients made
    orthogonal and of equal norm (condition number 1) before they are combined.

    ``σ`` is the smallest (``scale_mode="min"``), median or mean (``"rmse"``) eigenvalue on the
    numerical rank. TorchJD's ``AlignedMTLWeighting``.

    Args:
        num_tasks: K.
        pref_vector: the weights ``u``, K positive numbers; None (default) is ``1/K`` each.
        scale_mode: ``"min"`` (default), ``"median"`` or ``"rmse"``.
        on: ``"params"`` (default) or ``"features"``.
    """

    def __init__(
        self, *, num_tasks: int, pref_vector: Sequence[float] | None = None,
        scale_mode: str = "min", on: str = "params",
    ) -> None:
        super().__init__(num_tasks=num_tasks, on=on)
        self.pref_vector = _pref_vector(pref_vector, num_tasks)
        self.scale_mode = choice("scale_mode", scale_mode, ("min", "median", "rmse"))
        self._finish_init()

    def _make(self, aggregation: Any, active: list[int]) -> Any:
        return aggregation.AlignedMTLWeighting(
            pref_vector=_pref_tensor(self.pref_vector, active), scale_mode=self.scale_mode
        )


@register_weighting("fairgrad", gradient_based=True, extra="torchjd")
class FairGrad(TorchJDWeighting):
    """FairGrad: ``d = Σ α_k g_k`` with ``M α = α^{−1/a}`` (α-fair allocation of progress).

    ``a = 1`` is proportional fairness (the Nash bargaining point, up to scale); a larger ``a``
    leans towards the worst-off task (max-min fairness as ``a → ∞``). TorchJD's
    ``FairGradWeighting`` (scipy's least squares).

    Args:
        num_tasks: K.
        alpha: the fairness exponent ``a`` (> 0). Default 1.0.
        on: ``"params"`` (default) or ``"features"``.
    """

    def __init__(self, *, num_tasks: int, alpha: float = 1.0, on: str = "params") -> None:
        super().__init__(num_tasks=num_tasks, on=on)
        self.alpha = positive("alpha", alpha)
        self._finish_init()

    def _make(self, aggregation: Any, active: list[int]) -> Any:
        return aggregation.FairGradWeighting(alpha=self.alpha)
