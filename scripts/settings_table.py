"""Render `.env.example` as the README's settings table (`--write` updates README.md in place).

`.env.example` is held to the Settings class by tests/core/test_env_example.py, and the README's
table is held to `.env.example` by the same test file, so neither can drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = REPO_ROOT / ".env.example"
README = REPO_ROOT / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
GROUP = re.compile(r"^# --- (.+) ---$")
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$")


def render(env_example: str) -> str:
    rows: list[str] = []
    comment: list[str] = []
    for line in env_example.splitlines():
        if group := GROUP.match(line):
            title = group.group(1).capitalize()
            rows += [
                "",
                f"**{title}**",
                "",
                "| variable | default | meaning |",
                "| --- | --- | --- |",
            ]
            comment = []
        elif line.startswith("# ") and rows:
            comment.append(line[2:].strip())
        elif (assignment := ASSIGNMENT.match(line)) and rows:
            name, default = assignment.groups()
            meaning = " ".join(comment).replace("|", "\\|")
            shown = f"`{default}`" if default else "(empty)"
            rows.append(f"| `{name}` | {shown} | {meaning} |")
            comment = []
        else:
            comment = []
    return "\n".join(rows).strip() + "\n"


def readme_with_table(readme: str, table: str) -> str:
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table}{END}{after}"


def main() -> int:
    table = render(ENV_EXAMPLE.read_text())
    if "--write" in sys.argv:
        README.write_text(readme_with_table(README.read_text(), table))
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
