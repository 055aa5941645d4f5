"""Each route module owns its prose (PROSE: explanation, example, sharing) and its plan advice."""

from __future__ import annotations

import io
from types import ModuleType, SimpleNamespace

import pytest
from rich.console import Console

import tlroutes.cli
from tlroutes.matrix import Route
from tlroutes.routes.registry import RouteProse, Sharing, get_route, list_routes


def _module(route: Route) -> ModuleType:
    return get_route(route)


@pytest.mark.parametrize("name", list_routes())
def test_every_registered_route_module_has_prose_and_advice(name):
    module = get_route(name)
    assert callable(module.recommend)
    assert module.recommend.__doc__
    prose = module.PROSE
    assert isinstance(prose, RouteProse) and isinstance(prose.sharing, Sharing)
    assert isinstance(prose.explanation, str) and prose.explanation.strip().endswith(".")
    assert isinstance(prose.example, str) and prose.example.strip()
    assert [part for part, _ in prose.sharing.rows()] == ["stems", "trunk", "heads", "stages"]
    assert all(isinstance(v, str) and v for _, v in prose.sharing.rows())


def test_prose_matches_the_design():
    # Spot checks against DESIGN.md's sharing table and example list.
    assert _module(Route.WEIGHT_SHARING).PROSE.sharing.stems == "one per domain"
    assert _module(Route.MULTI_TASK_LEARNING).PROSE.sharing.heads == "one per task"
    assert _module(Route.PARALLEL_TRAINING).PROSE.sharing.stages == "concurrent, independent"
    assert (_module(Route.TASK_FINE_TUNING).PROSE.example
            == "ImageNet classifier → dog-breed classifier")


def test_routes_explain_prints_each_routes_prose(monkeypatch):
    # Wide enough that no cell wraps, so each example appears whole on one line.
    console = Console(record=True, width=400, file=io.StringIO())
    monkeypatch.setattr(tlroutes.cli, "console", console)
    tlroutes.cli.main(["routes", "--explain"])
    text = console.export_text()
    for route in Route:
        assert route.title in text
        assert _module(route).PROSE.example in text
        assert _module(route).PROSE.explanation in text


def _problems(*sizes: int, outputs: int = 10) -> dict[str, SimpleNamespace]:
    """Stand-ins for Problem: ``recommend`` reads only the training size and the output count."""
    task = SimpleNamespace(num_outputs=outputs)
    return {f"p{i}": SimpleNamespace(train=range(n), task=task) for i, n in enumerate(sizes)}


@pytest.mark.parametrize(("route", "sizes", "expected"), [
    (Route.TASK_FINE_TUNING, (1000, 290), {"schedule": "lp_ft"}),  # 29 per output
    (Route.TASK_FINE_TUNING, (1000, 300), {"schedule": "full"}),  # 30 per output
    (Route.DOMAIN_ADAPTATION, (100, 100), {"method": "mcc", "selection": "im"}),
    (Route.TASK_ADAPTATION, (100, 100), {"cache_features": True}),
    (Route.MODALITY_TRANSFER, (100, 100), {"control": True}),
    (Route.DATASET_MERGING, (100, 201), {"mixing": "balanced", "deduplicate": "drop"}),
    (Route.DATASET_MERGING, (100, 200), {"mixing": "proportional", "deduplicate": "drop"}),
    (Route.WEIGHT_SHARING, (100, 100), {"domain_norm": True}),
    (Route.MULTI_TASK_LEARNING, (10,) * 4, {"weighting": "nash_mtl"}),
    (Route.MULTI_TASK_LEARNING, (10,) * 5,
     {"weighting": "mgda", "weighting_args": {"upper_bound": True}}),
    (Route.PARALLEL_TRAINING, (100, 100), {"backend": "auto"}),
], ids=lambda v: v.value if isinstance(v, Route) else None)
def test_recommend_gives_a_reason_for_every_setting(route, sizes, expected):
    warnings: list[str] = []
    recipe, reasons = _module(route).recommend(_problems(*sizes), None, warnings)
    assert recipe == expected
    assert set(reasons) == {k for k in expected if k != "weighting_args"}
    assert all(r.strip().endswith(".") for r in reasons.values())
    assert warnings == []  # without evidence no route has a caution to add


def test_domain_adaptation_warns_on_label_shift():
    shifted = SimpleNamespace(domain=SimpleNamespace(label_shift=SimpleNamespace(p_value=0.01)))
    even = SimpleNamespace(domain=SimpleNamespace(label_shift=SimpleNamespace(p_value=0.5)))
    module = _module(Route.DOMAIN_ADAPTATION)
    warnings: list[str] = []
    module.recommend(_problems(100, 100), SimpleNamespace(pairs=[even]), warnings)
    assert warnings == []
    module.recommend(_problems(100, 100), SimpleNamespace(pairs=[even, shifted]), warnings)
    assert len(warnings) == 1 and "class proportions differ" in warnings[0]
