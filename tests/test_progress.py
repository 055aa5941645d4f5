"""Progress: plain lines with time left off a terminal, nothing when disabled."""

from __future__ import annotations

from tlroutes.train.progress import ProgressReporter


def test_plain_lines_name_the_epoch_and_the_time_left(capsys):
    reporter = ProgressReporter(live=False)
    reporter.start_stage("target", epochs=4, steps_per_epoch=10, start_epoch=1)
    reporter.end_epoch({"epoch": 1, "loss": 0.5, "time_s": 0.1}, epochs=4)
    reporter.end_stage("done")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[target] resuming at epoch 2/4"
    assert err[1].startswith("[target] epoch 2/4 loss=0.5 (0.1s, ~") and "s left)" in err[1]
    assert err[2] == "[target] done"
    assert "\x1b[" not in "".join(err)  # no terminal control codes in logs


def test_disabled_reporter_prints_nothing(capsys):
    reporter = ProgressReporter(enabled=False)
    reporter.start_stage("s", epochs=2, steps_per_epoch=3, start_epoch=0)
    reporter.advance(3)
    reporter.end_epoch({"epoch": 0, "loss": 1.0, "time_s": 0.1}, epochs=2)
    reporter.end_stage("done")
    assert capsys.readouterr().err == ""


def test_a_long_epoch_line_is_not_wrapped(capsys):
    reporter = ProgressReporter(live=False)
    reporter.start_stage("a-stage-with-a-long-name", epochs=3, steps_per_epoch=1, start_epoch=0)
    record = {"epoch": 0, "time_s": 0.1, **{f"val_metric_{i}": 0.123456 for i in range(8)}}
    reporter.end_epoch(record, epochs=3)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 120
