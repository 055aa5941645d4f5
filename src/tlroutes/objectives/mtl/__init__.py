"""Multi-task weightings: K task losses and the shared parameters in, gradients out.

One method per module, each registered by name (:mod:`~tlroutes.objectives.mtl.registry`) and
built by one factory::

    from tlroutes.objectives.mtl import create_weighting

    weighting = create_weighting("pcgrad", num_tasks=3)
    logs = weighting.backward(losses, model.trunk.parameters(), shared_features=feats)

The contract every method keeps is in :mod:`~tlroutes.objectives.mtl.base`; the machinery of the
gradient-manipulating methods in :mod:`~tlroutes.objectives.mtl.gradients`.

========================== ===================================================================
module                     methods (registry names)
========================== ===================================================================
``equal``                  ``ew`` — the plain sum
``uncertainty``            ``uw`` — Kendall et al. 2018
``dwa``                    ``dwa`` — Liu et al. 2019
``rlw``                    ``rlw`` — Lin et al. 2022
``gradnorm``               ``gradnorm`` — Chen et al. 2018
``pcgrad``                 ``pcgrad`` — Yu et al. 2020
``mgda``                   ``mgda`` — Sener & Koltun 2018 (exact min-norm solver)
``cagrad``                 ``cagrad`` — Liu et al. 2021
``nash_mtl``               ``nash_mtl`` — Navon et al. 2022
``torchjd_aggregators``    ``upgrad``, ``dualproj``, ``imtl_g``, ``aligned_mtl``, ``fairgrad``
                           — TorchJD's aggregators (the ``torchjd`` extra)
``fixed``                  ``fixed`` — constant weights chosen by the user
``gradsim``                ``gradsim`` — Du et al. 2018, gradient similarity (auxiliary tasks)
``auto_lambda``            ``auto_lambda`` — Liu et al. 2022, weights learned on the main task's
                           validation loss (auxiliary tasks)
========================== ===================================================================
"""

# Importing a method's module registers it (its decorator); the registry lists names sorted, so
# the order of these imports does not matter.
from tlroutes.objectives.mtl.auto_lambda import AutoLambda
from tlroutes.objectives.mtl.base import TaskBatch, Weighting
from tlroutes.objectives.mtl.cagrad import CAGrad, cagrad_weights
from tlroutes.objectives.mtl.dwa import DynamicWeightAverage
from tlroutes.objectives.mtl.equal import EqualWeighting
from tlroutes.objectives.mtl.fixed import FixedWeighting
from tlroutes.objectives.mtl.gradients import GradientWeighting, add_flat_grad, task_gradients
from tlroutes.objectives.mtl.gradnorm import GradNorm
from tlroutes.objectives.mtl.gradsim import GradientSimilarity
from tlroutes.objectives.mtl.mgda import MGDA, min_norm_weights
from tlroutes.objectives.mtl.nash_mtl import NashMTL, nash_weights
from tlroutes.objectives.mtl.pcgrad import PCGrad, pcgrad_coefficients, pcgrad_project
from tlroutes.objectives.mtl.registry import (
    WEIGHTINGS,
    WeightingInfo,
    available_weightings,
    check_weighting_args,
    create_weighting,
    register_weighting,
    weighting_info,
    weighting_name,
)
from tlroutes.objectives.mtl.rlw import RandomLossWeighting
from tlroutes.objectives.mtl.torchjd_aggregators import (
    IMTLG,
    AlignedMTL,
    DualProj,
    FairGrad,
    TorchJDWeighting,
    UPGrad,
)
from tlroutes.objectives.mtl.uncertainty import UncertaintyWeighting

__all__ = [
    "IMTLG",
    "MGDA",
    "WEIGHTINGS",
    "AlignedMTL",
    "AutoLambda",
    "CAGrad",
    "DualProj",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FairGrad",
    "FixedWeighting",
    "GradNorm",
    "GradientSimilarity",
    "GradientWeighting",
    "NashMTL",
    "PCGrad",
    "RandomLossWeighting",
    "TaskBatch",
    "TorchJDWeighting",
    "UPGrad",
    "UncertaintyWeighting",
    "Weighting",
    "WeightingInfo",
    "add_flat_grad",
    "available_weightings",
    "cagrad_weights",
    "check_weighting_args",
    "create_weighting",
    "min_norm_weights",
    "nash_weights",
    "pcgrad_coefficients",
    "pcgrad_project",
    "register_weighting",
    "task_gradients",
    "weighting_info",
    "weighting_name",
]
