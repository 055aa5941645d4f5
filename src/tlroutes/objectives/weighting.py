"""Multi-task weightings (this path is kept for existing imports; the methods live in
:mod:`tlroutes.objectives.mtl`, one per module, with their registry, and every public name of
that package is re-exported here)."""

from tlroutes.objectives import mtl
from tlroutes.objectives.mtl import *  # noqa: F403

__all__ = list(mtl.__all__)
