"""Layers only look down, and no module imports itself in a circle (DESIGN, "The next shape").

Every module under ``src/tlroutes`` is parsed with :mod:`ast` (nothing is imported) and placed in
a layer by :data:`LAYERS`. A module may import from its own layer or any layer below it:

- **upward imports** fail, whether at module level, inside a function (a lazy import is still a
  dependency) or under ``if TYPE_CHECKING`` (a lower layer should not name a higher one's
  types). Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``, so a package's
  ``__init__`` counts as imported too and must sit no higher than its importers;
- **import circles** between modules fail: module-level imports only (a function-local or
  ``TYPE_CHECKING`` import does not run at import time, so it cannot close a circle).

The root package ``tlroutes`` is exempt both ways: it is the lazy public facade, and importing any
``tlroutes.*`` module runs it anyway. The run report's package may be called ``report`` or
``reporting``: its primitives sit below the routes (a route draws its own report blocks with
them), its assembly above them (it asks the route registry for each route's section).

A new module is placed by the longest entry of :data:`LAYERS` that is its name or a package
above it; a new top-level module must be added to the table, which says where it belongs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "tlroutes"
REPORT_PACKAGES = ("report", "reporting")

#: The layers, lowest first, and the modules (or packages, with everything in them) each holds.
#: Mirrors DESIGN: cli → runner/planner → routes → (measure, train, report) → (model, objectives,
#: data, backbones) → (problem, matrix, config, errors); report split as said above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("errors", "checks", "problem", "lazy_inputs", "matrix", "config", "seeding",
                    "summary", "runfolder", "held")),
    ("parts", (
        "model", "lora", "objectives", "data", "backbones", "cube_picture",
        # report primitives (the package's own namespace holds primitives only)
        *REPORT_PACKAGES,
        *(f"{p}.{m}" for p in REPORT_PACKAGES
          for m in ("document", "tables", "plots", "html", "markdown", "collect", "details")),
    )),
    ("machinery", ("measure", "train", "manifest", "use")),
    ("routes", ("routes",)),
    ("orchestration", (
        "runner", "planner", "fitting",
        # report assembly
        *(f"{p}.{m}" for p in REPORT_PACKAGES for m in ("build", "sections", "route_sections")),
    )),
    ("interface", ("cli", "cli_use", "demo")),
]

#: Known upward imports, each named (importer, imported) with why it stands. Keep it short: an
#: entry that no longer matches an import fails the test, so a fixed one must leave the list.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a module of tlroutes."""

    importer: str
    target: str
    line: int
    module_level: bool
    type_only: bool


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, module_level: bool, type_only: bool):
    """(import node, module_level, type_only) for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, module_level, type_only
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, False, type_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), module_level, True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), module_level, type_only)
        else:
            yield from _walk(child, module_level, type_only)


def imports_of(name: str, path: Path, modules: set[str]) -> list[Import]:
    """The tlroutes modules ``name`` imports: ``from a import b`` names the module ``a.b`` when
    there is one, else ``a``; relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node, module_level, type_only in _walk(tree, True, False):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        for target in dict.fromkeys(targets):
            if target == ROOT or target.startswith(ROOT + "."):
                out.append(Import(name, target, node.lineno, module_level, type_only))
    return out


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the longest entry that is ``module`` or a package above it;
    None for the root package (exempt) and for a module the table does not place."""
    if module == ROOT:
        return None
    best, best_len = None, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            full = f"{ROOT}.{entry}"
            if (module == full or module.startswith(full + ".")) and len(full) > best_len:
                best, best_len = index, len(full)
    return best


def packages_above(module: str) -> list[str]:
    """The packages whose ``__init__`` importing ``module`` runs (the root excluded)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_every_module_has_a_layer(graph):
    unplaced = sorted(m for m in graph if m != ROOT and layer_of(m) is None)
    assert not unplaced, (
        f"{unplaced} sit in no layer; add them (or their package) to LAYERS in {__file__}.")


def upward_imports(graph: dict[str, list[Import]]) -> dict[tuple[str, str], Import]:
    """Every (importer, imported) pair whose imported module sits higher than the importer."""
    found: dict[tuple[str, str], Import] = {}
    for name, imports in graph.items():
        own = layer_of(name)
        if own is None:
            continue
        for imp in imports:
            # the module itself, else the nearest package above it whose __init__ runs too
            for target in [imp.target, *reversed(packages_above(imp.target))]:
                theirs = layer_of(target)
                if theirs is not None and theirs > own:
                    found.setdefault((name, target), imp)
                    break
    return found


def test_layers_only_look_down(graph):
    found = upward_imports(graph)
    bad = [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]}) at line "
        f"{imp.line}{'' if imp.module_level else ', inside a function'}"
        f"{', for type checking' if imp.type_only else ''}"
        for (a, b), imp in sorted(found.items()) if (a, b) not in ALLOWED_UPWARD
    ]
    assert not bad, "Imports that run upward (move the code down, or the import up):\n  " + (
        "\n  ".join(bad))
    stale = sorted(set(ALLOWED_UPWARD) - set(found))
    assert not stale, f"ALLOWED_UPWARD names imports that no longer run upward: {stale}"


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle (as a path that returns to its start) per strongly connected group of
    modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in edges.get(node, ()):
                    groups.append(group)
    return [_circle_in(sorted(group), edges) for group in groups]


def _circle_in(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child in members and child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return group  # unreachable for a strongly connected group


def test_no_import_circles(graph):
    edges = {name: {imp.target for imp in imports
                    if imp.module_level and not imp.type_only and imp.target != name}
             for name, imports in graph.items()}
    cycles = find_cycles(edges)
    assert not cycles, "Import circles (module-level imports):\n  " + "\n  ".join(
        " -> ".join(c) for c in cycles)


def test_the_checks_catch_what_they_are_for():
    """The checker itself: an upward import and a circle are found, a downward one is not."""
    assert layer_of("tlroutes.train.parallel.fused") == layer_of("tlroutes.train")
    assert layer_of("tlroutes.reporting.tables") < layer_of("tlroutes.routes.common")
    assert layer_of("tlroutes.report.build") > layer_of("tlroutes.routes.common")
    assert layer_of("tlroutes") is None
    up = Import("tlroutes.data.mixing", "tlroutes.train.engine", 1, False, False)
    down = Import("tlroutes.train.engine", "tlroutes.data.mixing", 1, True, False)
    found = upward_imports({"tlroutes.data.mixing": [up], "tlroutes.train.engine": [down]})
    assert set(found) == {("tlroutes.data.mixing", "tlroutes.train.engine")}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
