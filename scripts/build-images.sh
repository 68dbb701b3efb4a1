#!/usr/bin/env bash
# Build the sandbox images offline (debootstrap base + language layer); a no-op when up to date.
# Extra arguments go to sandbox_images.build (--force, --base-image IMAGE, --mirror URL).
set -euo pipefail
cd "$(dirname "$0")/.."
exec uv run --frozen --quiet python -m sandbox_images.build "$@"
