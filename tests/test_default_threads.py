"""A run file without ``hardware.threads``: cores ÷ processes, capped by ``OMP_NUM_THREADS``."""

from __future__ import annotations

import pytest
import torch

from tlroutes.train import hardware
from tlroutes.train.hardware import Hardware, default_threads, make_fabric


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(hardware, "machine_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize(("processes", "expected"), [(1, 8), (2, 4), (3, 2), (16, 1)])
def test_cores_are_divided_among_the_processes(eight_cores, processes, expected):
    assert default_threads(processes) == expected


@pytest.mark.parametrize(("omp", "processes", "expected"), [
    ("1", 1, 1), ("3", 1, 3), ("3", 4, 2), ("64", 1, 8),  # a cap above the share changes nothing
    ("0", 1, 8), ("", 1, 8), ("two", 1, 8), ("-2", 1, 8),  # not a positive count: no cap
])
def test_omp_num_threads_caps_the_share(eight_cores, monkeypatch, omp, processes, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert default_threads(processes) == expected


def test_make_fabric_takes_the_capped_default_and_an_explicit_count_over_it(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(hardware, "machine_cores", lambda: 2)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        make_fabric(Hardware(accelerator="cpu"))
        assert torch.get_num_threads() == 1
        make_fabric(Hardware(accelerator="cpu", threads=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
