"""`--seeds` on `tlroutes inspect` and `tlroutes plan`: the measurement seeds behind a domain
verdict, whose spread the evidence reports."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli, write_run
from tlroutes import cli as cli_module
from tlroutes.measure.domain import VERDICT_SEEDS


def test_the_cli_default_is_the_measurement_default():
    assert cli_module.VERDICT_SEEDS == VERDICT_SEEDS


@pytest.mark.slow
def test_inspect_and_plan_take_the_measurement_seeds(tmp_path):
    """A clear shift: the first seed already has the majority of the planned seeds, so one seed
    runs whatever the plan; the stability record says how many were planned and needed."""
    out = tmp_path / "evidence.json"
    cli("inspect", "digits:n=300", "digits:n=300,rotation=60", "--seeds", "3",
        "--permutations", "50", "--json", str(out), check=True)
    stability = json.loads(out.read_text())["pairs"][0]["domain"]["stability"]
    assert stability["planned"] == 3 and stability["majority"] == 2
    assert "(2 of 3)" in stability["rule"]
    assert stability["seeds"][0] == 0 and len(stability["seeds"]) <= 3

    run_file = write_run(tmp_path / "run.yaml", {
        "route": "auto", "seed": 4,
        "source": {"dataset": "digits", "task": "digit", "n": 300},
        "target": {"dataset": "digits", "task": "digit", "n": 300, "shift": {"rotation": 60}}})
    cli("plan", str(run_file), "--seeds", "1", "--permutations", "50", "--out",
        str(tmp_path / "plan"), check=True)
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    stability = plan["evidence"]["pairs"][0]["domain"]["stability"]
    assert stability["planned"] == 1 and stability["seeds"] == [4]

    bad = cli("inspect", "digits:n=300", "digits:n=300", "--seeds", "0")
    assert bad.returncode != 0 and "--seeds" in bad.stderr + bad.stdout
