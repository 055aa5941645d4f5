"""Use what a run trained: :func:`load` a run folder as a :class:`Predictor`, predict on new
data (:mod:`~tlroutes.use.inputs`), export the model (:mod:`~tlroutes.use.export`)."""

from tlroutes.use.predictor import Predictor, load

__all__ = ["Predictor", "load"]
