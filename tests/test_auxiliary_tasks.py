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
