"""Measurements that place a project on the cube: domains, tasks, transferability.

- :mod:`~tlroutes.measure.two_sample`: MMD and classifier two-sample tests, label shift.
- :mod:`~tlroutes.measure.domain`: the domain verdict with its schema gate and controls, over
  several measurement seeds (majority, with its spread).
- :mod:`~tlroutes.measure.task`: task kinds, the relation of the classes present (declared lists
  apart, missing classes, label-prior shift), NCE of a source model.
- :mod:`~tlroutes.measure.placement`: the task and domain axes of a pair, the one rule ``plan``
  and every route's cell check use (cached by content).
- :mod:`~tlroutes.measure.scores`: LogME, H-score, LEEP, NCE, k-NN and linear-probe accuracy.
- :mod:`~tlroutes.measure.transferability`: candidate trunks ranked with bootstrap intervals.
- :mod:`~tlroutes.measure.evidence`: :func:`inspect`, all of the above for two problems.
- :mod:`~tlroutes.measure.display`: the tables ``tlroutes inspect`` and ``plan`` print.
"""
