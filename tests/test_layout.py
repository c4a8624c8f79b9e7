"""The map of the package kept true, pure: docs/development.md's table of modules names every module of relay/ (and
main.py) once, each importing only modules above it; its Mermaid diagram draws exactly the imports of the code,
less those a longer path of arrows implies; relay/__init__.py exports nothing and lists the modules in the table's
order; the tests map names only modules that exist, and every module. An import counts wherever it is: at the top,
inside a function or under TYPE_CHECKING, as `lint-imports` counts it (.importlinter)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
DEVELOPMENT = ROOT / "docs" / "development.md"
ENTRY_POINTS = "main"  # main.py: the diagram's name for it, as for every module the name without `relay.`
ARROW_RE = re.compile(r"\s*([a-z_]+) --> ([a-z_]+)\s*")

Graph = dict[str, set[str]]


def modules() -> set[str]:
    return {path.stem for path in (ROOT / "relay").glob("*.py") if path.stem != "__init__"} | {ENTRY_POINTS}


def imports() -> Graph:
    """Who imports whom among main.py and the modules of relay/, by their short names. The package's graph is the
    one `lint-imports` checks (grimp's); main.py, which grimp cannot read (it is no package), is read here."""
    package = grimp.build_graph("relay", include_external_packages=True, cache_dir=None)  # main.py is external to it
    graph: Graph = {name: set() for name in modules()}
    for importer in modules() - {ENTRY_POINTS}:
        imported = package.find_modules_directly_imported_by(f"relay.{importer}")
        graph[importer] = {name.removeprefix("relay.") for name in imported if name.startswith("relay.")} & modules()
        graph[importer] |= {ENTRY_POINTS} & imported
    for node in ast.walk(ast.parse((ROOT / "main.py").read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        graph[ENTRY_POINTS] |= {name.removeprefix("relay.") for name in names if name.startswith("relay.")} & modules()
    return graph


def reachable(graph: Graph, start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def reduction(graph: Graph) -> set[tuple[str, str]]:
    """The arrows of an acyclic graph that no longer path implies (its transitive reduction: unique, and every
    other import is a path of them)."""
    return {
        (importer, imported)
        for importer, targets in graph.items()
        for imported in targets
        if not any(imported in reachable(graph, other) for other in targets - {imported})
    }


def section(heading: str) -> str:
    return DEVELOPMENT.read_text().split(f"\n## {heading}\n")[1].split("\n## ")[0]


def diagram() -> set[tuple[str, str]]:
    """The arrows of the Mermaid diagram; any line it cannot read fails, so that no arrow hides in other syntax."""
    [block] = re.findall(r"```mermaid\n(.*?)```", section("The package"), flags=re.DOTALL)
    lines = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("%%")]
    assert lines[0] == "flowchart TD", lines[0]
    arrows = [ARROW_RE.fullmatch(line) for line in lines[1:]]
    assert all(arrows), [line for line, arrow in zip(lines[1:], arrows, strict=True) if not arrow]
    return {(arrow[1], arrow[2]) for arrow in arrows if arrow}


def table_order() -> list[str]:
    """The modules of the table, top to bottom: `relay.NAME` or `main.py` in each row's first cell."""
    cells = [line.split("|")[1].strip() for line in section("The package").splitlines() if line.startswith("| `")]
    return [ENTRY_POINTS if cell == "`main.py`" else cell.removeprefix("`relay.").removesuffix("`") for cell in cells]


def test_no_module_imports_one_that_imports_it_back_main_py_included():
    graph = imports()
    assert [name for name in sorted(graph) if name in reachable(graph, name)] == []


def test_the_diagram_draws_exactly_the_imports_of_the_code_less_those_a_longer_path_implies():
    drawn, real = diagram(), reduction(imports())
    missing = "".join(f"\n    {importer} --> {imported}" for importer, imported in sorted(real - drawn))
    extra = "".join(f"\n    {importer} --> {imported}" for importer, imported in sorted(drawn - real))
    assert drawn == real, f"docs/development.md's diagram lacks:{missing or ' -'}\nand draws, in vain:{extra or ' -'}"


def test_the_table_names_every_module_once_each_importing_only_modules_above_it():
    order, graph = table_order(), imports()
    assert sorted(order) == sorted(modules())
    upwards = [(name, imported) for at, name in enumerate(order) for imported in graph[name] - set(order[:at])]
    assert upwards == [], "a module imports one below it in the table"


def test_the_package_exports_nothing_and_lists_its_modules_in_the_tables_order():
    package = ast.parse((ROOT / "relay" / "__init__.py").read_text())
    assert [type(statement) for statement in package.body] == [ast.Expr]  # its docstring, and nothing else
    [listing] = [part for part in (ast.get_docstring(package) or "").split("\n\n") if "data-flow order" in part]
    words = re.findall(r"[a-z_]+", re.sub(r"\([^)]*\)", "", listing.split(":", 1)[1]))
    assert [word for word in words if word in modules()] == [name for name in table_order() if name != ENTRY_POINTS]


def test_the_tests_map_names_modules_that_exist_and_every_module_has_a_test_file():
    rows = [line.split("|") for line in section("The tests map").splitlines() if line.startswith("| `test_")]
    named = {name for row in rows for name in re.findall(r"`([a-z_]+|main\.py)`", row[2])}
    assert named - modules() - {"main.py"} == set(), "no such module"
    assert modules() - named - {ENTRY_POINTS} == set(), "a module no test file names"
    assert "main.py" in named
