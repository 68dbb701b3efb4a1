#!/usr/bin/env bash
# Bring a machine of this kind from nothing to "ready to run and test": Python deps, system
# packages, a Docker engine and the sandbox image. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }

# System packages first: the engine, gVisor (SANDBOX_RUNTIME=runsc), the rootfs builder and
# the throwaway test services, HAProxy for the cluster tests.
APT_PACKAGES=(docker.io runsc debootstrap postgresql redis-server haproxy)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        say "missing packages ${missing[*]} and not root; install them and re-run" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' maintainer scripts from starting system-wide daemons (postgres on 5432,
    # redis on 6379, a second dockerd): this project starts its own, on ports it picks.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    # Quiet unless it fails: debconf and needrestart chatter is noise in CI logs.
    export NEEDRESTART_SUSPEND=1
    apt_log=$(mktemp)
    if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } \
        >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        say "apt-get failed" >&2
        exit 1
    fi
    rm -f "$apt_log"
fi

# uv, then the locked environment (the dev group is included by default).
if ! command -v uv >/dev/null 2>&1; then
    say "installing uv"
    python3 -m pip install --quiet --disable-pip-version-check uv
    hash -r
    command -v pyenv >/dev/null 2>&1 && pyenv rehash
fi
uv sync --frozen --quiet

bash scripts/docker-engine.sh
# gVisor is optional for serving (runc is the default runtime), so a failure only warns here;
# the suite's runsc tests fail in CI when the engine does not list it.
bash scripts/gvisor.sh || say "gVisor is not registered; SANDBOX_RUNTIME=runsc will not work"
bash scripts/build-images.sh
say "ready"
