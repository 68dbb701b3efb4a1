#!/usr/bin/env bash
# Install what is missing, migrate the database, then serve the API (HOST/PORT to override).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/prestart.sh
# app.serve starts uvicorn with its proxy headers off: only TRUSTED_PROXIES are believed.
exec uv run --frozen python -m app.serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
