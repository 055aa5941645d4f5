"""Unsupervised domain-adaptation losses: align source and target without target labels.

One method per module, each an :class:`torch.nn.Module` with its formula and paper in the
docstring, and one registry that builds any of them by name:

- ``dann`` — :class:`DomainAdversarialLoss` (Ganin et al., 2015/2016), ``forward(f_s, f_t)``;
- ``coral`` — :class:`CorrelationAlignmentLoss` (Sun & Saenko, 2016), ``forward(f_s, f_t)``;
- ``mmd`` — :class:`MultipleKernelMMD`, DAN's MK-MMD (Long et al., 2015), ``forward(f_s, f_t)``;
- ``cdan`` — :class:`ConditionalDomainAdversarialLoss`, CDAN / CDAN+E (Long et al., 2018),
  ``forward(g_s, f_s, g_t, f_t)``;
- ``mcc`` — :class:`MinimumClassConfusionLoss` (Jin et al., 2020), ``forward(g_t)``;
- ``jan`` — :class:`JointMultipleKernelMMD`, JAN's JMMD (Long et al., 2017),
  ``forward(f_s, f_t, g_s, g_t)``.

The plain classes drop into any training loop with the signatures above::

    f_s, f_t = trunk(x_s), trunk(x_t)          # (B_s, D), (B_t, D)
    g_s, g_t = head(f_s), head(f_t)            # (B_s, K), (B_t, K) logits
    loss = F.cross_entropy(g_s, y_s) + trade_off * align(f_s, f_t)

The registry builds any method with one call and calls it one way (see
:mod:`tlroutes.objectives.alignment.registry` for the contract)::

    align = create_alignment("cdan", features=D, classes=K, max_steps=steps)
    loss = F.cross_entropy(g_s, y_s) + trade_off * align(f_s, f_t, g_s, g_t)

The adversarial losses (DANN, CDAN) hold their own domain discriminator and a gradient reversal
layer, so one optimiser over ``model.parameters()`` *and* ``align.parameters()`` trains both sides
of the min-max game in a single backward pass. Their warm-up step counter is a persistent buffer,
so it is saved in ``state_dict()`` and a resumed run continues the schedule where it stopped.

Shared pieces live beside the methods: :mod:`.adversarial` (gradient reversal, discriminator),
:mod:`.kernels` (Gaussian kernels, the MMD estimators), :mod:`.certainty` (entropy weights),
:mod:`.checks` (argument and input checks).
"""

from __future__ import annotations

import importlib
import pkgutil

from tlroutes.objectives.alignment.adversarial import (
    DomainDiscriminator,
    GradientReverse,
    WarmStartGradientReverse,
    dann_coefficient,
    grad_reverse,
)
from tlroutes.objectives.alignment.cdan import (
    ConditionalDomainAdversarialLoss,
    RandomizedMultilinearMap,
    multilinear_map,
)
from tlroutes.objectives.alignment.certainty import entropy_weights
from tlroutes.objectives.alignment.coral import CorrelationAlignmentLoss
from tlroutes.objectives.alignment.dann import DomainAdversarialLoss
from tlroutes.objectives.alignment.jan import JointMultipleKernelMMD
from tlroutes.objectives.alignment.kernels import GaussianKernel
from tlroutes.objectives.alignment.mcc import MinimumClassConfusionLoss
from tlroutes.objectives.alignment.mmd import MultipleKernelMMD
from tlroutes.objectives.alignment.registry import (
    ALIGNMENTS,
    create_alignment,
    list_alignments,
    register_alignment,
)

# A method registers itself by existing: every module of this package is imported, so a new
# loss is one new file with one @register_alignment, and no list here to keep in step.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ALIGNMENTS",
    "create_alignment",
    "list_alignments",
    "register_alignment",
    "GradientReverse",
    "grad_reverse",
    "dann_coefficient",
    "WarmStartGradientReverse",
    "DomainDiscriminator",
    "DomainAdversarialLoss",
    "CorrelationAlignmentLoss",
    "GaussianKernel",
    "MultipleKernelMMD",
    "multilinear_map",
    "RandomizedMultilinearMap",
    "entropy_weights",
    "ConditionalDomainAdversarialLoss",
    "MinimumClassConfusionLoss",
    "JointMultipleKernelMMD",
]
