"""Multi-task weightings (this path is kept for existing imports; the methods live in
:mod:`tlroutes.objectives.mtl`, one per module, with their registry)."""

from tlroutes.objectives.mtl import (
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    DualProj,
    DynamicWeightAverage,
    EqualWeighting,
    FairGrad,
    GradNorm,
    NashMTL,
    PCGrad,
    RandomLossWeighting,
    UncertaintyWeighting,
    UPGrad,
    Weighting,
    available_weightings,
    create_weighting,
)

__all__ = [
    "IMTLG",
    "MGDA",
    "AlignedMTL",
    "CAGrad",
    "DualProj",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FairGrad",
    "GradNorm",
    "NashMTL",
    "PCGrad",
    "RandomLossWeighting",
    "UPGrad",
    "UncertaintyWeighting",
    "Weighting",
    "available_weightings",
    "create_weighting",
]
