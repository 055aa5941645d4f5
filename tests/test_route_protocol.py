"""The route protocol: a registered plug-in route runs, reports and reads back like a built-in
one; the typed summary round-trips through summary.json and averages seeds (baselines too);
the public API is the real functions."""

from __future__ import annotations

import inspect
import json
import statistics
from types import ModuleType

import pytest

import tlroutes
from tests import toy_route
from tlroutes.errors import ConfigError
from tlroutes.routes import get_route, list_routes, register_route, unregister_route
from tlroutes.summary import Summary, aggregate

TOY = {"route": "toy", "recipe": {"scale": 1.5}, "hardware": {"accelerator": "cpu"}}


@pytest.fixture
def toy():
    register_route("toy", toy_route)
    yield toy_route
    unregister_route("toy")


def test_a_registered_route_runs_and_gets_its_report_section(toy, tmp_path):
    summary = tlroutes.run(TOY, tmp_path / "toy", progress=False)
    assert isinstance(summary, Summary)
    assert summary.route == "toy" and summary.details["toy_scale"] == 1.5
    assert summary.metrics["accuracy"] == pytest.approx(0.75)
    assert summary.gain == pytest.approx(0.35) and summary.negative_transfer is False
    assert summary.also == {"other": pytest.approx(0.3)}
    page = (tmp_path / "toy" / "report.html").read_text()
    assert "The toy route&#x27;s own section: scale 1.5." in page or \
        "The toy route's own section: scale 1.5." in page
    assert "Toy Fine-Tuning: run report" in page and "A toy recipe" in page
    # the report of the finished folder is rebuilt through the registry as well
    again = tlroutes.report(tmp_path / "toy", tsne=False)
    assert again.missing == ["metrics.jsonl"]  # the toy trains nothing
    assert "scale 1.5" in again.markdown.read_text()


def test_a_plug_in_recipe_is_validated_once_with_its_own_fields(toy, tmp_path):
    with pytest.raises(ConfigError, match="scal"):
        tlroutes.run({**TOY, "recipe": {"scal": 2}}, tmp_path / "bad", progress=False)


def test_summary_round_trips_through_summary_json(toy, tmp_path):
    summary = tlroutes.run({**TOY, "seeds": 2}, tmp_path / "two", progress=False)
    saved = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert saved == summary.to_dict()
    back = Summary.from_dict(saved)
    assert back == summary
    assert back.per_seed[1].details == {"toy_scale": 1.5} and back.per_seed[1].seed == 1
    one = json.loads((tmp_path / "two" / "seed-0" / "summary.json").read_text())
    assert Summary.from_dict(one) == summary.per_seed[0]
    # the JSON stays flat (details beside the fields), as earlier versions wrote it
    assert saved["route_title"] == "Toy Fine-Tuning" and saved["toy_scale"] == 1.5
    assert "details" not in saved and "seeds" not in one


def test_aggregate_averages_baselines_and_the_rest():
    def one(seed: int, acc: float, base: float, other: float | None) -> Summary:
        return Summary(route="x", title="X", primary_metric="accuracy",
                       metrics={"accuracy": acc}, baseline={"accuracy": base},
                       baseline_kind="scratch", gain=acc - base, seed=seed,
                       baselines={"scratch": {"accuracy": base},
                                  "other": None if other is None else {"accuracy": other}},
                       also={"control": acc / 2}, details={"note": seed})

    seeds = [one(0, 0.8, 0.7, 0.5), one(1, 0.6, 0.7, 0.3), one(2, 0.7, 0.6, 0.4)]
    agg = aggregate(seeds)
    assert agg.baselines["scratch"]["accuracy"] == pytest.approx(statistics.fmean([.7, .7, .6]))
    assert agg.baselines["other"]["accuracy"] == pytest.approx(0.4)
    assert agg.baselines_std["other"]["accuracy"] == pytest.approx(0.1)
    assert agg.baseline == agg.baselines["scratch"]
    assert agg.metrics["accuracy"] == pytest.approx(0.7)
    assert agg.gain == pytest.approx(statistics.fmean([0.1, -0.1, 0.1]))
    assert agg.gain_std == pytest.approx(statistics.stdev([0.1, -0.1, 0.1]))
    assert agg.also["control"] == pytest.approx(0.35)
    assert agg.negative_transfer is False and agg.negative_transfer_consistent is False
    assert agg.seeds == [0, 1, 2] and agg.seed is None and agg.per_seed == seeds
    # a baseline one seed lacks has no mean
    seeds[1].baselines["other"] = None
    assert aggregate(seeds).baselines["other"] is None


def test_old_summary_json_reads_back():
    old = {"route": "task_fine_tuning", "route_title": "Task Fine-Tuning",
           "primary_metric": "accuracy", "higher_is_better": True,
           "metrics": {"accuracy": 0.8}, "baseline": {"accuracy": 0.7}, "gain": 0.1,
           "negative_transfer": False, "carried_over": "stem and trunk", "schedule": "full",
           "also": {}, "seed": 0}
    s = Summary.from_dict(old)
    assert s.title == "Task Fine-Tuning" and s.details == {"schedule": "full"}
    assert s.get("schedule") == "full" and s.get("route_title") == "Task Fine-Tuning"
    with pytest.raises(ConfigError, match="metrics"):
        Summary.from_dict({k: v for k, v in old.items() if k != "metrics"})


def test_every_built_in_route_follows_the_protocol():
    for name in list_routes():
        module = get_route(name)
        assert module.ROUTE.value == name
        for attr in ("Recipe", "run", "report_blocks", "recommend", "PROSE"):
            assert hasattr(module, attr), (name, attr)
        assert list(inspect.signature(module.report_blocks).parameters) == ["run", "tsne"]
        assert inspect.signature(module.report_blocks).parameters["tsne"].kind is \
            inspect.Parameter.KEYWORD_ONLY


def test_registry_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="Did you mean 'task_fine_tuning'"):
        get_route("task_fine_tunin")
    assert get_route("Task Fine-Tuning") is get_route(tlroutes.Route.TASK_FINE_TUNING)
    with pytest.raises(ConfigError, match="already registered"):
        register_route("task_fine_tuning", toy_route)
    with pytest.raises(ConfigError, match="lacks ROUTE, Recipe, run, report_blocks"):
        register_route("half", ModuleType("half"))
    with pytest.raises(ConfigError, match="built-in"):
        unregister_route("task_fine_tuning")


def test_a_plug_in_without_prose_borrows_its_cells(toy, monkeypatch):
    from tlroutes.routes.explain import explain_table
    from tlroutes.routes.registry import RouteProse, prose_of

    assert prose_of(toy_route) is toy_route.PROSE
    monkeypatch.delattr(toy_route, "PROSE")
    assert prose_of(toy_route) is get_route("task_fine_tuning").PROSE
    assert explain_table().row_count == len(list_routes())
    monkeypatch.setattr(toy_route, "PROSE", {"explanation": "words"}, raising=False)
    with pytest.raises(ConfigError, match="PROSE must be a tlroutes.routes.registry.RouteProse"):
        register_route("toy", toy_route, replace=True)
    assert isinstance(get_route("task_fine_tuning").PROSE, RouteProse)


def test_public_api_is_the_real_functions():
    from tlroutes.matrix import route_for
    from tlroutes.measure.evidence import inspect as inspect_
    from tlroutes.planner import plan
    from tlroutes.reporting.build import build_report
    from tlroutes.runner import run

    assert tlroutes.run is run and tlroutes.plan is plan and tlroutes.inspect is inspect_
    assert tlroutes.report is build_report and tlroutes.build_report is build_report
    assert tlroutes.route_for is route_for
    namespace: dict = {}
    exec("from tlroutes import *", namespace)
    assert "inspect" not in namespace  # the standard module's name stays the user's
    with pytest.raises(TypeError):
        tlroutes.route_for("same", "same", "sequential")  # keyword-only: easy to swap
    for fn in (tlroutes.run, tlroutes.plan, tlroutes.report):
        params = inspect.signature(fn).parameters
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[2:])
