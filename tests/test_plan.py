"""`tlroutes plan` and `tlroutes inspect`: the route named from declarations and measurements."""

from __future__ import annotations

import json

import pytest

from tlroutes.cli import main
from tlroutes.config import load_run_file, parse_run
from tlroutes.demo import example_files
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route
from tlroutes.measure.evidence import inspect, parse_data_arg
from tlroutes.planner import plan, plan_order

FAST = {"permutations": 100, "max_samples": 400}


@pytest.mark.slow
@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_plan_names_each_examples_route(path):
    result = plan(path, **FAST)
    # a variant's example (domain_adaptation_partial.yaml) names its route in the file
    assert result.route is Route.parse(load_run_file(path).route), (result.to_dict()["axes"],
                                                                    result.warnings)
    json.dumps(result.to_dict())  # the plan is JSON-able as written by the command


def test_route_auto_takes_the_measured_route():
    spec = parse_run({
        "route": "auto",
        "source": {"dataset": "digits", "task": "digit", "n": 600},
        "target": {"dataset": "digits", "task": "digit", "n": 600, "shift": {"rotation": 40}},
        "constraints": {"source_data": True},
    })
    result = plan(spec, **FAST)
    assert result.declared_route is None
    assert result.route is Route.DOMAIN_ADAPTATION
    assert result.domain.source == "measured"
    assert result.recipe["method"] == "mcc"


def test_a_declared_route_that_measurement_contradicts_is_warned():
    spec = parse_run({
        "route": "task_fine_tuning",  # declares same domain, but the target is rotated
        "source": {"dataset": "digits", "n": 600},
        "target": {"dataset": "digits", "n": 600, "shift": {"rotation": 40}},
    })
    result = plan(spec, **FAST)
    assert result.route is Route.DOMAIN_ADAPTATION
    assert any("declares Task Fine-Tuning" in w for w in result.warnings)


def test_disjoint_label_sets_learned_at_once_are_different_tasks():
    """Digit and parity of the same images: one kind of task, but merging them would give the
    same inputs two labels, so learned at once they are Multi-Task Learning, not Dataset
    Merging; learned one after the other, they stay Task Fine-Tuning (a new head)."""
    problems = {"digit": {"dataset": "digits", "task": "digit", "n": 200},
                "parity": {"dataset": "digits", "task": "parity", "n": 200}}
    together = plan(parse_run({"route": "auto", "problems": problems}), **FAST)
    assert together.route is Route.MULTI_TASK_LEARNING, together.to_dict()["axes"]
    assert "disjoint" in together.task.detail
    declared = plan(parse_run({"route": "multi_task_learning", "problems": problems}), **FAST)
    assert not any("declares" in w for w in declared.warnings), declared.warnings
    in_turn = plan(parse_run({"route": "auto", "source": problems["digit"],
                              "target": problems["parity"]}), **FAST)
    assert in_turn.task.value == "same"


def test_order_from_constraints():
    one = parse_run({"route": "auto", "constraints": {"one_model": True}})
    assert plan_order(one, None).value == "simultaneous"
    assert plan_order(one, None).source == "constraints"
    pretrained = parse_run({"route": "auto", "constraints": {"source_data": False}})
    assert plan_order(pretrained, None).value == "sequential"
    assert plan_order(parse_run({"route": "auto"}), None).value == "sequential"
    assert plan_order(parse_run({"route": "auto", "problems": {"a": {}, "b": {}}}),
                      None).value == "simultaneous"


@pytest.mark.parametrize("data, words", [
    ({"route": "auto", "order": "simultaneous", "constraints": {"source_data": False}},
     "constraints say sequential"),
    ({"route": "dataset_merging", "constraints": {"source_data": False}},
     "constraints say sequential"),
    ({"route": "task_fine_tuning", "constraints": {"one_model": True}},
     "constraints say simultaneous"),
    ({"route": "auto", "source": None, "constraints": {"one_model": True}},
     "source data is not available"),
])
def test_an_order_contradicting_the_constraints_is_an_error(data, words):
    with pytest.raises(ConfigError, match=words):
        plan_order(parse_run(data), None if data["route"] == "auto" else Route.parse(data["route"]))


def test_dataset_strings():
    spec = parse_data_arg("digits:rotation=30,n=500,classes=0-4,task=parity")
    assert spec.dataset == "digits" and spec.n == 500 and spec.task == "parity"
    assert spec.shift == {"rotation": 30.0} and spec.classes == [0, 1, 2, 3, 4]
    assert parse_data_arg("mnist1d:classes=1/3/5").classes == [1, 3, 5]
    with pytest.raises(ConfigError, match="rotaton.*rotation"):
        parse_data_arg("digits:rotaton=30")
    with pytest.raises(ConfigError, match="key=value"):
        parse_data_arg("digits:rotation")


def test_inspect_different_modalities_is_a_schema_verdict_not_a_crash():
    evidence = inspect("digits:n=200", "mnist1d:n=200", **FAST)
    (pair,) = evidence.pairs
    assert pair.domain.verdict == "different"
    assert "schema" in pair.domain.reason.lower()


def test_inspect_too_few_samples_is_undecided_and_says_how_many():
    evidence = inspect("digits:n=12", "digits:n=12,rotation=30", **FAST)
    (pair,) = evidence.pairs
    assert pair.domain.verdict == "undecided"
    assert "need" in pair.domain.reason.lower()


def test_inspect_and_plan_commands(tmp_path, capsys):
    out = tmp_path / "evidence.json"
    main(["inspect", "digits:n=300", "digits:n=300,rotation=40", "--json", str(out),
          "--permutations", "100"])
    printed = capsys.readouterr().out
    assert "different" in printed
    saved = json.loads(out.read_text())
    assert saved["pairs"][0]["domain"]["verdict"] == "different"

    run_file = tmp_path / "auto.yaml"
    run_file.write_text("route: auto\nsource: {dataset: digits, n: 300}\n"
                        "target: {dataset: digits, n: 300, task: properties}\n")
    main(["plan", str(run_file), "--out", str(tmp_path / "plan"), "--permutations", "100"])
    printed = capsys.readouterr().out
    assert "Task Adaptation" in printed
    assert (tmp_path / "plan" / "plan.json").is_file()
    assert (tmp_path / "plan" / "cube.png").is_file()


def test_plan_and_run_refuse_a_contradicting_order_with_one_message(tmp_path):
    from tests.conftest import cli

    run_file = tmp_path / "bad.yaml"
    run_file.write_text("route: dataset_merging\nconstraints: {source_data: false}\n"
                        "problems: {a: {n: 50}, b: {n: 50}}\n")
    for command in ("plan", "run"):
        proc = cli(command, str(run_file), "--out", str(tmp_path / command))
        assert proc.returncode == 2, proc.stderr
        assert "constraints say sequential" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_inspect_ranks_candidate_trunks(tmp_path, capsys):
    out = tmp_path / "ranked.json"
    main(["inspect", "digits:n=300,classes=0-4", "digits:n=300,classes=5-9", "--candidate",
          "conv=cnn2d", "--candidate", "flat=mlp", "--json", str(out), "--permutations", "50"])
    assert "trunks ranked" in capsys.readouterr().out
    ranking = json.loads(out.read_text())["transferability"]
    assert ranking["candidates"] == ["conv", "flat"]
    assert {"logme", "h_score", "knn", "linear_probe"} <= set(ranking["scores"])
    with pytest.raises(SystemExit) as stop:
        main(["inspect", "digits", "digits:rotation=10", "--candidate", "cnn2d"])
    assert stop.value.code == 2
    assert "NAME=TRUNK" in capsys.readouterr().err


@pytest.mark.slow
def test_run_with_route_auto_plans_then_runs(tmp_path):
    from tlroutes.runner import run

    spec = parse_run({
        "route": "auto",
        "source": {"dataset": "digits", "n": 300},
        "target": {"dataset": "digits", "n": 300, "task": "properties"},
        "model": {"trunk": "mlp"},
        "source_training": {"epochs": 1}, "target_training": {"epochs": 1},
        "hardware": {"accelerator": "cpu"},
    })
    summary = run(spec, tmp_path / "auto", progress=False)
    assert summary.route == "task_adaptation"  # same images, a multilabel task
    saved = json.loads((tmp_path / "auto" / "plan.json").read_text())
    assert saved["route"] == "task_adaptation"
    assert "route: task_adaptation" in (tmp_path / "auto" / "run.yaml").read_text()


def test_a_job_set_notes_pairs_that_could_share_more():
    spec = parse_run({"route": "parallel_training", "recipe": {"jobs": {
        "a": {"data": {"dataset": "digits", "n": 200}},
        "b": {"data": {"dataset": "digits", "n": 200, "task": "properties"}},
        "c": {"data": {"dataset": "mnist1d", "n": 200, "task": "position"}}}}})
    result = plan(spec, **FAST)
    assert result.route is Route.PARALLEL_TRAINING
    assert any("'a' and 'b' alone sit on Multi-Task Learning" in w for w in result.warnings)


def test_inspect_passes_source_heads_for_leep_and_nce():
    import torch

    from tlroutes.data import load_builtin
    from tlroutes.model import build_model

    source = load_builtin("digits", task="digit", classes=[0, 1, 2, 3, 4], n=300)
    target = load_builtin("digits", task="digit", classes=[5, 6, 7, 8, 9], n=300)
    torch.manual_seed(0)
    model = build_model(source.domain, source.task, trunk="mlp").eval()
    head = model.get_head()
    evidence = inspect(source, target, candidates={"mlp": model.features},
                       source_heads={"mlp": head}, source_model=model, **FAST)
    assert {"leep", "nce"} <= set(evidence.transferability.scores)
    assert evidence.pairs[0].task.nce is not None


@pytest.mark.slow
def test_inspect_uses_a_finished_runs_source_model(tmp_path):
    from tests.conftest import cli, small_run, write_run

    run_file = write_run(tmp_path / "run.yaml", small_run())
    cli("run", str(run_file), "--out", str(tmp_path / "tft"), "--quiet", check=True)
    out = tmp_path / "ev.json"
    cli("inspect", "digits:classes=0-4,n=200", "digits:classes=5-9,n=200", "--source-run",
        str(tmp_path / "tft"), "--json", str(out), "--permutations", "50", check=True)
    saved = json.loads(out.read_text())
    assert saved["pairs"][0]["task"]["nce"] is not None
    assert {"leep", "nce"} <= set(saved["transferability"]["scores"])
    (tmp_path / "empty").mkdir()
    proc = cli("inspect", "digits", "digits:rotation=10", "--source-run", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "not a run folder" in proc.stderr
