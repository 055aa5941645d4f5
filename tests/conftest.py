"""Shared test helpers: small run files, subprocess runs of the CLI, the ``one_thread`` fixture
and :func:`summary_dict`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

#: Torch threads per test process: one in each pytest-xdist worker (``make test`` starts one
#: worker per core, so more would oversubscribe the cores), two in a serial run. Runs without
#: ``hardware.threads`` and the CLI's subprocesses follow it through ``OMP_NUM_THREADS``.
TEST_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
os.environ["OMP_NUM_THREADS"] = str(TEST_THREADS)
torch.set_num_threads(TEST_THREADS)


_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None}


def _is_local(host: object) -> bool:
    if host in _LOCAL_HOSTS or host == socket.gethostname():
        return True
    text = str(host)
    return text.startswith("127.") or text.startswith("::ffff:127.")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs offline: a connection or name lookup beyond this machine fails the test.

    The attempt raises an ``OSError`` (as on a machine without network, so code under test sees
    what a user offline sees) and is recorded; the test then fails naming the host, even when
    the code under test swallowed the error (a library retrying a download, say). Loopback and
    Unix sockets (distributed tests, MLflow's local store, Ray) stay allowed.
    """
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refuse(what: str) -> OSError:
        attempts.append(what)
        return OSError(f"tests run offline: {what} refused")

    def check(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) \
                and not _is_local(address[0]):
            raise refuse(f"connect to {address[0]}:{address[1]}")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if not _is_local(name):
            raise socket.gaierror(socket.EAI_NONAME, str(refuse(f"name lookup of {name}")))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts  # a test of the guard itself reads (and clears) the record
    if attempts:
        pytest.fail(f"the test reached for the network ({'; '.join(sorted(set(attempts)))}); "
                    "tests must run offline")


@pytest.fixture
def one_thread():
    """Run the test on one torch thread, then restore the count.

    Tiny networks run fastest on one thread, steadiest on a busy machine, and with the same float
    reductions everywhere. A test file opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def summary_dict(result) -> dict:
    """A run's summary as a plain dict, whether ``run()`` returned a dict or a typed summary."""
    to_dict = getattr(result, "to_dict", None)
    return to_dict() if callable(to_dict) else result


def small_run(**overrides) -> dict:
    """A Task Fine-Tuning run on digits that takes a few seconds."""
    run = {
        "route": "task_fine_tuning",
        "seed": 3,
        "source": {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "n": 400},
        "target": {"dataset": "digits", "classes": [5, 6, 7, 8, 9], "n": 120},
        "model": {"trunk": "mlp", "trunk_args": {"dropout": 0.1}},
        "source_training": {"epochs": 3, "batch_size": 32},
        "target_training": {"epochs": 3, "batch_size": 32},
        "hardware": {"accelerator": "cpu"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(run.get(key), dict):
            run[key] = {**run[key], **value}
        else:
            run[key] = value
    return run


def write_run(path: Path, run: dict) -> Path:
    path.write_text(yaml.safe_dump(run))
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(TEST_THREADS)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run ``tlroutes ARGS`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "tlroutes.cli", *args], capture_output=True, text=True,
        env=cli_env(), **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tlroutes {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def run_file(tmp_path):
    return write_run(tmp_path / "run.yaml", small_run())
