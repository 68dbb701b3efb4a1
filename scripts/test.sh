#!/usr/bin/env bash
# The whole check, as CI runs it: setup, throwaway PostgreSQL/Redis, lint, then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k migrations -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Reuse services a developer already started; stop only the ones this run started.
if ! bash scripts/services.sh status 2>/dev/null; then
    trap 'bash scripts/services.sh stop' EXIT
    bash scripts/services.sh start
fi
eval "$(bash scripts/services.sh env)"

bash scripts/lint.sh

status=0
uv run --frozen pytest "$@" || status=$?
exit "$status"
