"""The packages of app/ depend on each other one way: read from the source with `ast`.

Rules (STYLE.md): `core` depends on nothing else in the app; there is no import cycle between the
packages of app/; nothing imports a router except the modules that assemble the app. Every
import counts, including those inside functions and under TYPE_CHECKING: a cycle hidden in a
function is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from app.core.config import REPO_ROOT

APP = REPO_ROOT / "app"
# The modules at the top of app/ assemble the packages; they may import anything, routers too.
ASSEMBLERS = {"app.main", "app.api", "app.models", "app.cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the app modules that `path` imports (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "app" or name.startswith("app.")}


def _package_of(module: str) -> str:
    """`app.auth.service` -> `app.auth`; a top-level module of app/ is its own unit."""
    return ".".join(module.split(".")[:2])


def module_imports() -> dict[str, set[str]]:
    return {_module_name(path): _imported_modules(path) for path in sorted(APP.rglob("*.py"))}


def package_graph() -> dict[str, set[str]]:
    known = set(module_imports())
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imported in module_imports().items():
        source = _package_of(module)
        for name in imported:
            target = _package_of(name)
            if target != source and target != "app" and any(m.startswith(target) for m in known):
                graph[source].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one package (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_core_depends_on_nothing_else_in_the_app() -> None:
    graph = package_graph()
    assert graph.get("app.core", set()) == set()


def test_there_is_no_import_cycle_between_packages() -> None:
    assert _cycles(package_graph()) == []


def test_only_the_assembling_modules_import_a_router() -> None:
    offenders = {
        module: sorted(name for name in imported if name.endswith(".router"))
        for module, imported in module_imports().items()
        if module not in ASSEMBLERS
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_the_checker_finds_a_cycle_and_a_core_import() -> None:
    """The rules above can fail: a planted cycle is found."""
    assert _cycles({"app.a": {"app.b"}, "app.b": {"app.c"}, "app.c": {"app.a"}}) == [
        ["app.a", "app.b", "app.c"]
    ]
    assert _cycles({"app.a": {"app.b"}, "app.b": set()}) == []
