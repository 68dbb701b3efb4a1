"""The submissions package runs one way like the jobs package: nothing but the lifespan imports its
workers, the service and the grader never import them, and the jobs package never imports
submissions (submissions build on jobs, never the reverse)."""

from __future__ import annotations

from tests.jobs.test_layering import APP, importers_of, imports_of


def test_only_the_lifespan_imports_the_submission_workers() -> None:
    assert importers_of("app.submissions.worker") == {"app/main.py"}


def test_the_jobs_package_never_imports_submissions() -> None:
    assert not {path for path in importers_of("app.submissions") if path.startswith("app/jobs/")}


def test_the_grader_knows_neither_the_database_nor_the_workers() -> None:
    imported = imports_of(APP / "submissions" / "grader.py")

    assert not {
        name
        for name in imported
        if name.startswith(("app.submissions.worker", "app.submissions.repository", "app.core.db"))
    }
