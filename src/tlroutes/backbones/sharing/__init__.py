"""Multi-task architectures beyond hard sharing: how the trunk is shared between tasks.

A multi-task model is stems → trunk → one head per task. *Hard sharing* (the default) gives every
head the same trunk features. The architectures here give each task its own features from
shared parts, and are chosen in a Multi-Task Learning run file's recipe::

    recipe:
      weighting: ew
      architecture: mmoe            # hard (default) | mmoe | ple | mtan | cross_stitch
      architecture_args: {experts: 3}

=================  ==============================================  =========================
name               what is shared                                  trunks
=================  ==============================================  =========================
``hard``           one trunk, read by every head                   any
``mmoe``           E expert trunks; one softmax gate per task      any
``ple``            shared + per-task experts, per-task gates,      any
                   one or more extraction levels (CGC at 1)
``mtan``           one trunk; per-task attention masks per stage   cnn2d, cnn1d
``cross_stitch``   one trunk per task, mixed after each stage      cnn2d, cnn1d
=================  ==============================================  =========================

Choosing: start with ``hard`` — cheapest, and with few, related tasks hard to beat. When tasks
conflict (Δm negative, or one task falls behind its single-task baseline), give them room:
``mmoe`` lets each task weight shared experts its own way; ``ple`` adds experts no other task
can pull on (its authors' answer to MMoE's "seesaw" between tasks); both cost about E trunks.
For a CNN, ``mtan`` keeps one trunk and adds small per-task masks (a fraction of a trunk's
cost); ``cross_stitch`` runs K trunks and learns how much to share at each stage. See
``benchmarks/RESULTS.md`` ("Multi-task architectures") for each one's step cost.
"""

from tlroutes.backbones.sharing.base import (
    HARD,
    SHARINGS,
    SharedFeatures,
    TaskSharing,
    check_sharing_args,
    check_sharing_fits,
    create_sharing,
    list_sharings,
    register_sharing,
    sharing_name,
)
from tlroutes.backbones.sharing.conv import MTAN, CrossStitch
from tlroutes.backbones.sharing.experts import PLE, MMoE

__all__ = [
    "HARD",
    "MTAN",
    "PLE",
    "SHARINGS",
    "CrossStitch",
    "MMoE",
    "SharedFeatures",
    "TaskSharing",
    "check_sharing_args",
    "check_sharing_fits",
    "create_sharing",
    "list_sharings",
    "register_sharing",
    "sharing_name",
]
