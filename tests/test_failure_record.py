"""A stopped run records what stopped it (``failed.json``), from the Python API as from the CLI;
its report says so; a finished or fresh run leaves no stale record."""

from __future__ import annotations

import pytest

import tlroutes
from tests.conftest import small_run
from tlroutes.errors import TrainingDivergedError
from tlroutes.runfolder.failure import FAILURE_FILE, read_failure

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_diverged_run_records_its_cause_and_the_report_shows_it(tmp_path):
    out = tmp_path / "out"
    diverging = small_run(source={"n": 200}, target={"n": 60},
                          source_training={"epochs": 1, "lr": 1e30},
                          target_training={"epochs": 1}, hardware={"threads": 1})
    with pytest.raises(TrainingDivergedError):
        tlroutes.run(diverging, out, progress=False)
    record = read_failure(out)
    assert record is not None and record.error == "TrainingDivergedError"
    assert record.resumable is False and "loss became" in record.message
    page = (out / "report.md").read_text(encoding="utf-8")
    assert "The run stopped on TrainingDivergedError" in page
    assert "a resume would stop the same way" in page

    # A fresh start into the folder (the stopped run trained nothing to keep) clears the record,
    # and a run that finishes leaves none.
    fixed = small_run(source={"n": 200}, target={"n": 60}, source_training={"epochs": 1},
                      target_training={"epochs": 1}, hardware={"threads": 1})
    tlroutes.run(fixed, tmp_path / "other", progress=False)
    assert not (tmp_path / "other" / FAILURE_FILE).exists()


def test_a_refusal_before_training_records_nothing(tmp_path):
    out = tmp_path / "out"
    bad = small_run(recipe={"schedule": "no-such-schedule"})
    with pytest.raises(tlroutes.TLRoutesError):
        tlroutes.run(bad, out, progress=False)
    assert read_failure(out) is None
