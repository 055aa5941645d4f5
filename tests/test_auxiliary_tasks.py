"""The importance axis: one main task served by auxiliary ones (issue 15, items 1-3 and 5).

- a run with ``importance: {digit: main}`` selects on, reports and compares with the main task
  alone (the baseline is the main task trained alone for the same steps);
- the ablation trains main + each auxiliary and reports a table with spread, flagging the
  auxiliaries that hurt;
- the plan, the cube table and the routes table show the axis;
- each bad input gets one clear error.
"""

from __future__ import annotations

import json

import pytest

from tlroutes.config import parse_run
from tlroutes.errors import ConfigError
from tlroutes.matrix import importance_text
from tlroutes.routes.auxiliary import ALL, ALONE, ablation_blocks
from tlroutes.runner import run

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = {"epochs": 3, "batch_size": 32}
PROBLEMS = {"digit": {"dataset": "digits", "task": "digit", "n": 150},
            "properties": {"dataset": "digits", "task": "properties", "n": 150},
            "gt4": {"dataset": "digits", "task": "gt4", "n": 150}}


def _spec(**fields):
    return {"route": "multi_task_learning", "seed": 1, "model": {"trunk": "mlp"},
            "training": QUICK, "hardware": {"accelerator": "cpu"}, "problems": PROBLEMS,
            "importance": {"digit": "main"}, **fields}


@pytest.mark.parametrize("weighting", ["gradsim", "auto_lambda"])
def test_the_main_task_is_selected_on_reported_and_compared_alone(tmp_path, weighting):
    summary = run(parse_run(_spec(recipe={"weighting": weighting})), tmp_path / "r",
                  progress=False)
    per_task = summary.details["per_task"]
    assert summary.primary_metric == "accuracy"
    assert summary.metrics == per_task["digit"]  # the run's metric is the main task's
    assert summary.details["importance"] == {"digit": "main", "properties": "auxiliary",
                                             "gt4": "auxiliary"}
    # the baseline is the main task alone, for as many steps as the joint stage
    assert set(summary.details["baseline_epochs"]) == {"digit"}
    done = {s: json.loads((tmp_path / "r" / "checkpoints" / s / "done.json").read_text())
            for s in ("joint", "single-digit")}
    steps = {s: d["history"][-1]["step"] for s, d in done.items()}
    assert steps["joint"] == steps["single-digit"]
    assert summary.baseline == summary.details["per_task_baseline"]["digit"]
    # selection: the best epoch is the best main-task validation accuracy, not the mean score
    history = done["joint"]["history"]
    main_val = [h["val_digit_accuracy"] for h in history]
    assert done["joint"]["best_score"] == pytest.approx(max(main_val))
    assert main_val[done["joint"]["best_epoch"]] == pytest.approx(max(main_val))
    assert "train_weight_gt4" in (tmp_path / "r" / "metrics.jsonl").read_text()


def test_the_ablation_trains_main_with_each_auxiliary_for_the_same_steps(tmp_path):
    summary = run(parse_run(_spec(recipe={"weighting": "fixed", "ablation": True,
                                          "weighting_args": {"weights": {"gt4": 0.5}}})),
                  tmp_path / "r", progress=False)
    rows = summary.details["ablation"]
    assert list(rows) == [ALONE, "main + properties", "main + gt4", ALL]
    assert rows[ALONE] == summary.baseline["accuracy"]
    assert rows[ALL] == summary.metrics["accuracy"]
    done = {s: json.loads((tmp_path / "r" / "checkpoints" / s / "done.json").read_text())
            for s in ("joint", "with-properties", "with-gt4")}
    steps = {s: d["history"][-1]["step"] for s, d in done.items()}
    assert len(set(steps.values())) == 1, steps
    report = (tmp_path / "r" / "report.md")
    if report.is_file():
        assert "main + gt4" in report.read_text()


def test_the_ablation_table_flags_an_auxiliary_that_hurts():
    seeds = [{ALONE: 0.70, "main + a": 0.80, "main + b": 0.60, ALL: 0.75},
             {ALONE: 0.72, "main + a": 0.79, "main + b": 0.62, ALL: 0.76},
             {ALONE: 0.71, "main + a": 0.81, "main + b": 0.70, ALL: 0.74}]
    table, notice = ablation_blocks(seeds, "accuracy", True)
    verdicts = {row[0]: row[3] for row in table.rows}
    assert verdicts["main + a"] == "helps" and verdicts["main + b"] == "hurts"
    assert "b" in notice.text and "main + a" not in notice.text
    # lower is better: a smaller loss is the improvement
    losses = [{ALONE: 1.0, "main + a": 0.5, ALL: 0.6}, {ALONE: 1.1, "main + a": 0.6, ALL: 0.7}]
    (table,) = ablation_blocks(losses, "mse", False)
    assert {row[0]: row[3] for row in table.rows}["main + a"] == "helps"


def test_the_plan_and_the_tables_show_the_importance_axis():
    from tlroutes.planner import plan
    from tlroutes.routes.explain import cube_table, explain_table

    spec = _spec(problems={k: PROBLEMS[k] for k in ("digit", "properties")})
    result = plan(spec, permutations=20, seeds=1, max_samples=200)
    assert result.route.value == "multi_task_learning"
    assert result.importance == {"digit": "main", "properties": "auxiliary"}
    assert result.to_dict()["importance"] == result.importance
    assert result.recipe["weighting"] == "auto_lambda" and "weighting" in result.reasons
    assert "importance: main: digit; auxiliary: properties" in cube_table(
        result.route, result.importance).title
    table = explain_table()
    column = [c for c in table.columns if c.header == "importance"][0]
    cells = list(column.cells)
    assert any("main task with auxiliary" in c for c in cells)
    assert any("the target is the main task" in c for c in cells)
    assert importance_text({}) == "equal"


@pytest.mark.parametrize(("fields", "match"), [
    ({"importance": {"digit": "main", "gt4": "main"}}, "marks 2 main tasks"),
    ({"importance": {"digits": "main"}}, "not under problems.*Did you mean 'digit'"),
    ({"importance": {"gt4": "auxiliary"}}, "no main task"),
    ({"importance": {"digit": "primary"}}, "'main' or 'auxiliary'"),
])
def test_bad_importance_is_one_clear_error(fields, match):
    with pytest.raises(ConfigError, match=match):
        parse_run(_spec(**fields))


def test_importance_in_a_sequential_run_says_what_it_means_there():
    with pytest.raises(ConfigError, match="the target is the main task by construction"):
        parse_run({"route": "task_fine_tuning", "importance": {"target": "main"}})


def test_importance_on_another_simultaneous_route_is_refused(tmp_path):
    spec = {"route": "dataset_merging", "importance": {"a": "main"},
            "problems": {"a": {"dataset": "digits"}, "b": {"dataset": "digits", "seed": 3}}}
    with pytest.raises(ConfigError, match="does not read the run file's 'importance:'"):
        run(parse_run(spec), tmp_path / "r", progress=False)


@pytest.mark.parametrize(("fields", "match"), [
    ({"importance": {}, "recipe": {"weighting": "gradsim"}}, "names no main task"),
    ({"recipe": {"weighting": "gradsim", "weighting_args": {"main": 1}}},
     "must not set main"),
    ({"importance": {}, "recipe": {"ablation": True}}, "ablation.*names no main task"),
    ({"problems": {k: PROBLEMS[k] for k in ("digit", "properties")},
      "recipe": {"ablation": True}}, "at least two auxiliary tasks"),
    ({"recipe": {"weighting": "fixed", "weighting_args": {"weights": {"parity": 2}}}},
     "not a task of this run"),
])
def test_bad_auxiliary_recipes_are_one_clear_error(tmp_path, fields, match):
    with pytest.raises(ConfigError, match=match):
        run(parse_run(_spec(**fields)), tmp_path / "r", progress=False)


def test_a_main_task_on_its_own_inputs_gets_a_full_batch_every_step():
    """Tasks over different inputs are separate streams, one batch each per step. One mixed
    stream gave 60 main training samples beside 600 auxiliary ones about 2 of 20 a step, and the
    same-steps baseline 20: the joint model saw the main task a tenth as often (issue 15)."""
    import torch

    from tlroutes.config import TrainSpec
    from tlroutes.data.builtin import load_builtin
    from tlroutes.routes.multi_task_learning import (
        Joined,
        MultiTaskStep,
        longest_stream,
        train_streams,
    )

    problems = {"digit": load_builtin("digits", task="digit", n=100, seed=1),
                "properties": load_builtin("digits", task="properties", n=1000, seed=2),
                "gt4": load_builtin("digits", task="gt4", n=1000, seed=2)}
    joined = Joined({n: p.task for n, p in problems.items()})
    # batches of 20 divide both streams (60 and 600 training samples): every batch is full
    streams = train_streams(problems, joined, TrainSpec(epochs=1, batch_size=20), 0, "joint")
    assert len(streams) == 2  # digit alone; properties and gt4 share their inputs
    assert longest_stream(problems) == len(problems["properties"].train) == 600
    for step in range(4):
        batch = {name: s.batch(step) for name, s in streams.items()}
        y = torch.cat([b[1] for b in batch.values()])
        assert int(joined.unpack(y, "digit")[1].sum()) == 20
        assert int(joined.unpack(y, "properties")[1].sum()) == 20
    # the step learns from every stream's batch at once
    from tlroutes.model import build_model
    from tlroutes.objectives.mtl import create_weighting

    model = build_model({"input": problems["digit"].domain}, joined.tasks, "mlp", {}, "auto",
                        {})
    step = MultiTaskStep(model, joined, create_weighting("ew", num_tasks=3))
    (losses, _), _ = step({name: s.batch(0) for name, s in streams.items()})
    assert all(loss is not None for loss in losses)


def test_the_auxiliary_example_runs_with_the_main_task_selected_and_a_same_steps_baseline(
        tmp_path):
    """examples/multi_task_learning_auxiliary.yaml (loaded as a file, as the demo does) on a
    budget of 6 steps: what it reports, not how much it gains (benchmarks/RESULTS.md has that;
    the stream test above covers the epoch's length)."""
    from tlroutes.config import load_run_file
    from tlroutes.demo import example_files

    path = [p for p in example_files() if p.name == "multi_task_learning_auxiliary.yaml"][0]
    spec = load_run_file(path)
    spec = spec.model_copy(update={
        "training": spec.training.model_copy(update={"epochs": None, "steps": 6}),
        "recipe": {**spec.recipe, "ablation": True}})  # as benchmarks/auxiliary_tasks.py runs it
    summary = run(spec, tmp_path / "r", progress=False)
    assert summary.details["main_task"] == "digit"
    assert summary.metrics == summary.details["per_task"]["digit"]
    assert list(summary.details["ablation"]) == [ALONE, "main + properties", "main + gt4", ALL]
    done = {s: json.loads((tmp_path / "r" / "checkpoints" / s / "done.json").read_text())
            for s in ("joint", "single-digit", "with-properties", "with-gt4")}
    steps = {s: d["history"][-1]["step"] for s, d in done.items()}
    assert set(steps.values()) == {6}, steps  # the baseline and each ablation: same steps
    history = done["joint"]["history"]
    assert done["joint"]["best_score"] == max(h["val_digit_accuracy"] for h in history)


def test_a_run_file_with_a_non_default_trunk_resolves(tmp_path):
    """A data block's private trunk hint (model.trunk) made an untouched source:/target: look
    set, so every Multi-Task Learning run file with trunk cnn1d was refused."""
    from tlroutes.config import check_blocks, load_run_file
    from tlroutes.routes.multi_task_learning import RUN_FILE_BLOCKS

    path = tmp_path / "run.yaml"
    path.write_text("route: multi_task_learning\nmodel: {trunk: mlp}\nproblems:\n"
                    "  digit: {task: digit}\n  parity: {task: parity}\n")
    check_blocks(load_run_file(path), RUN_FILE_BLOCKS, "Multi-Task Learning")
