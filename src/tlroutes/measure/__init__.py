"""Measurements that place a project on the cube: domains, tasks, transferability.

- :mod:`~tlroutes.measure.two_sample`: MMD and classifier two-sample tests, label shift.
- :mod:`~tlroutes.measure.domain`: the domain verdict with its schema gate and controls.
- :mod:`~tlroutes.measure.task`: task kinds, label-set relation, NCE of a source model.
- :mod:`~tlroutes.measure.scores`: LogME, H-score, LEEP, NCE, k-NN and linear-probe accuracy.
- :mod:`~tlroutes.measure.transferability`: candidate trunks ranked with bootstrap intervals.
- :mod:`~tlroutes.measure.evidence`: :func:`inspect`, all of the above for two problems.
- :mod:`~tlroutes.measure.display`: the tables ``tlroutes inspect`` and ``plan`` print.
"""
