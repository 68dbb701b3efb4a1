"""`.env.example` documents every setting, and only settings, with their real defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.core.config import REPO_ROOT, Settings

ENV_EXAMPLE = REPO_ROOT / ".env.example"
SETTINGS_TABLE = REPO_ROOT / "scripts" / "settings_table.py"
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
# Defaults that depend on where the repo is checked out; the example shows them relative.
PATH_DEPENDENT = {"data_dir", "database_url"}


def _documented() -> dict[str, str]:
    names: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            names[match.group(1)] = match.group(2)
    return names


def _field_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def test_every_setting_is_documented() -> None:
    missing = sorted(_field_names() - set(_documented()))
    assert not missing, f"add these settings to .env.example: {missing}"


def test_example_names_only_settings() -> None:
    unknown = sorted(set(_documented()) - _field_names())
    assert not unknown, f".env.example names variables Settings does not have: {unknown}"


def test_names_are_uppercase_and_unique() -> None:
    names = [
        m.group(1) for line in ENV_EXAMPLE.read_text().splitlines() if (m := ASSIGNMENT.match(line))
    ]
    assert all(name == name.upper() for name in names)
    assert len(names) == len(set(names)), "a variable appears twice in .env.example"


def test_every_variable_has_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    uncommented = [
        line.split("=", 1)[0]
        for previous, line in zip(["", *lines], lines, strict=False)
        if ASSIGNMENT.match(line) and not previous.startswith("#")
    ]
    assert not uncommented, f"give these a one-line comment in .env.example: {uncommented}"


def test_documented_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _field_names():
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    example = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    differing: dict[str, tuple[Any, Any]] = {
        name: (getattr(example, name), getattr(defaults, name))
        for name in Settings.model_fields
        if name not in PATH_DEPENDENT and getattr(example, name) != getattr(defaults, name)
    }
    assert not differing, f".env.example value != default (example, default): {differing}"
    assert (REPO_ROOT / _documented()["DATA_DIR"]).resolve() == defaults.data_dir.resolve()
    assert _documented()["DATABASE_URL"] == ""


def test_example_is_a_valid_configuration(tmp_path: Path) -> None:
    settings = Settings(_env_file=ENV_EXAMPLE, data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.database_url.startswith("sqlite:///")


def test_readme_settings_table_is_generated_from_the_example() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("settings_table", SETTINGS_TABLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (REPO_ROOT / "README.md").read_text()
    expected = module.readme_with_table(readme, module.render(ENV_EXAMPLE.read_text()))
    assert readme == expected, "run `python scripts/settings_table.py --write`"
