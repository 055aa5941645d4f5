"""The cube: axes → route, names, parsing, the terminal tables and the picture."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

from tests.conftest import cli_env
from tlroutes.cube_picture import draw_cube
from tlroutes.errors import ConfigError
from tlroutes.matrix import Route, route_for
from tlroutes.routes.explain import cube_table, explain_table

# DESIGN.md's table, written out by hand: (task, domain, order) -> title.
CUBE = [
    ("same", "same", "sequential", "Task Fine-Tuning"),
    ("same", "different", "sequential", "Domain Adaptation"),
    ("different", "same", "sequential", "Task Adaptation"),
    ("different", "different", "sequential", "Modality Transfer"),
    ("same", "same", "simultaneous", "Dataset Merging"),
    ("same", "different", "simultaneous", "Weight Sharing"),
    ("different", "same", "simultaneous", "Multi-Task Learning"),
    ("different", "different", "simultaneous", "Parallel Training"),
]
TITLES = [title for *_, title in CUBE]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("task", "domain", "order", "title"), CUBE)
def test_route_for_maps_every_cell(task, domain, order, title):
    route = route_for(task=task, domain=domain, order=order)
    assert route.title == title
    assert (route.task, route.domain, route.order) == (task, domain, order)


def test_route_for_is_case_insensitive():
    assert route_for(task="Different", domain=" SAME ", order="Sequential") is Route.TASK_ADAPTATION


def test_eight_distinct_routes_with_snake_case_ids():
    assert len(Route) == 8
    assert {route_for(task=t, domain=d, order=o) for t, d, o, _ in CUBE} == set(Route)
    assert Route.MULTI_TASK_LEARNING.value == "multi_task_learning"
    assert Route("task_fine_tuning") is Route.TASK_FINE_TUNING


@pytest.mark.parametrize("route", list(Route))
def test_printed_form_is_the_title(route):
    assert str(route) == route.title
    assert f"{route}" == route.title
    assert format(route) == route.title
    assert f"route: {route}" == f"route: {route.title}"


def test_the_cube_module_holds_no_prose_and_imports_no_route():
    # The prose is each route module's own (tests/test_route_advice.py); the cube is the bottom
    # layer, so importing it (and its picture) must not pull in a route.
    for name in ("explanation", "example", "sharing"):
        assert not hasattr(Route.TASK_FINE_TUNING, name)
    code = ("import sys, tlroutes.matrix, tlroutes.cube_picture; "
            "print(sorted(m for m in sys.modules if m.startswith('tlroutes.routes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env(), check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "name",
    [
        "Task Adaptation",
        "task-adaptation",
        "TASK_ADAPTATION",
        "task_adaptation",
        " task adaptation ",
        "Task  -  Adaptation",
        Route.TASK_ADAPTATION,
    ],
)
def test_parse_accepts_variants(name):
    assert Route.parse(name) is Route.TASK_ADAPTATION


def test_parse_titles_with_hyphens():
    assert Route.parse("Multi-Task Learning") is Route.MULTI_TASK_LEARNING
    assert Route.parse("multi task learning") is Route.MULTI_TASK_LEARNING
    assert Route.parse("task fine tuning") is Route.TASK_FINE_TUNING
    for title in TITLES:
        assert Route.parse(title).title == title


def test_parse_rejects_unknown_with_help():
    with pytest.raises(ConfigError) as info:
        Route.parse("domain adaption")
    message = str(info.value)
    assert "domain adaption" in message
    assert "Did you mean 'domain_adaptation'?" in message
    for route in Route:
        assert route.value in message


def test_parse_rejects_far_off_name_without_bad_suggestion():
    with pytest.raises(ConfigError, match="Unknown route 'banana'"):
        Route.parse("banana")


@pytest.mark.parametrize(
    ("args", "axis", "suggestion"),
    [
        (("same", "same", "sequental"), "order", "sequential"),
        (("sam", "same", "sequential"), "task", "same"),
        (("same", "diferent", "simultaneous"), "domain", "different"),
    ],
)
def test_invalid_axis_value(args, axis, suggestion):
    with pytest.raises(ConfigError) as info:
        route_for(**dict(zip(("task", "domain", "order"), args, strict=True)))
    message = str(info.value)
    assert axis in message
    assert f"Did you mean '{suggestion}'?" in message


def _render(renderable) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_cube_table_renders_all_titles():
    text = _render(cube_table())
    for title in TITLES:
        assert title in text
    assert "sequential" in text and "simultaneous" in text


def test_cube_table_highlight_is_styled():
    table = cube_table(highlight="weight sharing")
    styled = [
        str(cell)
        for column in table.columns
        for cell in column.cells
        if getattr(cell, "style", "") == "bold reverse"
    ]
    assert styled == ["Weight Sharing"]
    with pytest.raises(ConfigError):
        cube_table(highlight="nope")


def test_cube_table_column_order_matches_design():
    table = cube_table()
    sequential = [str(list(column.cells)[0]) for column in table.columns[1:]]
    assert sequential == TITLES[:4]


def test_explain_table_renders():
    text = _render(explain_table())
    for title in TITLES:
        assert title in text


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def test_draw_cube_writes_png(tmp_path):
    path = tmp_path / "deep" / "folder" / "cube.png"
    fig = draw_cube(path=path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 20_000
    assert fig.get_axes()


def test_draw_cube_highlight_changes_the_cell(tmp_path):
    plain = draw_cube()
    marked = draw_cube(Route.TASK_ADAPTATION)

    def face(fig, gid):
        (patch,) = [p for p in fig.axes[0].patches if p.get_gid() == gid]
        return tuple(patch.get_facecolor())

    assert face(marked, "task_adaptation") != face(plain, "task_adaptation")
    assert face(marked, "weight_sharing") == face(plain, "weight_sharing")
    assert face(marked, "task_adaptation") != face(marked, "weight_sharing")
    a, b = _pixels(plain), _pixels(marked)
    assert a.shape == b.shape
    assert (a != b).any(axis=-1).mean() > 0.02  # a whole cell changed colour, not a few pixels
