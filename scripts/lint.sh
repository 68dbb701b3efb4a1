#!/usr/bin/env bash
# Lint and format checks; `lint.sh --fix` rewrites files instead of only checking them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == --fix ]]; then
    uv run --frozen ruff check --fix .
    exec uv run --frozen ruff format .
fi
uv run --frozen ruff check .
uv run --frozen ruff format --check .
