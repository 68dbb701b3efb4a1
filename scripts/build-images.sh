#!/usr/bin/env bash
# Build the sandbox images offline (debootstrap base + language layer); a no-op when up to date.
# Extra arguments go to sandbox_images.build (--force, --base-image IMAGE, --mirror URL).
set -euo pipefail
cd "$(dirname "$0")/.."
# Images are machine-wide: two checkouts building at once would race for the same tags, so the
# second waits and then finds the images up to date.
exec 9>"${TMPDIR:-/tmp}/warmbox-build-images.lock"
flock 9
uv run --frozen --quiet python -m sandbox_images.build "$@"
