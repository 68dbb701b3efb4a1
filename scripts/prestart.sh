#!/usr/bin/env bash
# Bring the database schema to the newest migration before the web process starts.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then
    exec uv run --frozen --quiet alembic upgrade head
fi
# The production image has its venv on PATH but no uv.
exec alembic upgrade head
