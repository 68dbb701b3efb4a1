"""The jobs package's dependencies run one way (as arq's and Polar's do): the queue and the
service never import the workers, nothing but the lifespan starts them, and `app/jobs` never
reaches up into the code domain or a router."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def imports_of(path: Path) -> set[str]:
    """Every `app.*` module a file imports, TYPE_CHECKING blocks included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("app.")}


def importers_of(module: str) -> set[str]:
    return {
        str(path.relative_to(APP.parent))
        for path in APP.rglob("*.py")
        if any(name == module or name.startswith(f"{module}.") for name in imports_of(path))
    }


def test_only_the_lifespan_imports_the_job_workers() -> None:
    assert importers_of("app.jobs.worker") == {"app/main.py"}


def test_the_queue_knows_neither_the_service_nor_the_workers() -> None:
    imported = imports_of(APP / "jobs" / "queue.py")

    assert not {
        name for name in imported if name.startswith(("app.jobs.service", "app.jobs.worker"))
    }


def test_the_jobs_package_never_reaches_into_code_or_any_router() -> None:
    for path in (APP / "jobs").glob("*.py"):
        for name in imports_of(path):
            assert not name.startswith("app.code"), (path.name, name)
            assert ".router" not in name, (path.name, name)
