#!/usr/bin/env bash
# Register gVisor's runsc with the local Docker engine, so SANDBOX_RUNTIME=runsc works.
# Idempotent: adds (or completes) the `runsc` runtime in /etc/docker/daemon.json, keeping every
# other key and runtime in the file, then asks a running dockerd to reload it with SIGHUP (a
# reload never stops a container; the engine is never restarted). Installing the `runsc`
# package is scripts/setup.sh's job.
set -euo pipefail

DAEMON_JSON=${WARMBOX_DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
PIDFILE=/var/run/docker.pid
WAIT_S=${WARMBOX_DOCKERD_WAIT_S:-60}

say() { printf 'gvisor: %s\n' "$*"; }
engine_lists_runsc() {
    timeout 10 docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

runsc_path=$(command -v runsc || true)
if [[ -z "$runsc_path" ]]; then
    say "runsc is not installed (apt-get install runsc); SANDBOX_RUNTIME=runsc will not work" >&2
    exit 1
fi
host=${DOCKER_HOST:-}
if [[ -n "$host" && "$host" != unix://* ]]; then
    say "DOCKER_HOST=$host is a remote engine; register runsc in its daemon.json there"
    exit 0
fi
if engine_lists_runsc; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    say "the engine has no runsc runtime and only root can register it; run this as root" >&2
    exit 1
fi

# Merge, never overwrite: the file may hold the operator's own settings and runtimes.
# Without --network=none in runsc's own arguments a --network none container fails to start.
mkdir -p "$(dirname "$DAEMON_JSON")"
python3 - "$DAEMON_JSON" "$runsc_path" <<'EOF'
import json, os, sys

path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        text = f.read()
except FileNotFoundError:
    text = ""
config = json.loads(text) if text.strip() else {}
entry = config.setdefault("runtimes", {}).setdefault("runsc", {})
entry.setdefault("path", runsc)
args = entry.setdefault("runtimeArgs", [])
if "--network=none" not in args:
    args.append("--network=none")
new = json.dumps(config, indent=2) + "\n"
if new != text:
    tmp = f"{path}.warmbox-tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print(f"gvisor: registered runsc ({entry['path']}) in {path}")
EOF

# A dockerd that is not running yet reads the file when it starts (scripts/docker-engine.sh).
pid=$(cat "$PIDFILE" 2>/dev/null || true)
if [[ -z "$pid" || "$(cat "/proc/$pid/comm" 2>/dev/null || true)" != dockerd ]]; then
    say "no local dockerd is running; it will read $DAEMON_JSON when it starts"
    exit 0
fi
say "asking dockerd (pid $pid) to reload $DAEMON_JSON"
kill -HUP "$pid"
for ((i = 0; i < WAIT_S * 2; i++)); do
    if engine_lists_runsc; then
        say "the engine lists the runsc runtime"
        exit 0
    fi
    sleep 0.5
done
say "dockerd did not pick up runsc within ${WAIT_S}s; see its log (a daemon.json it rejects is" \
    "logged there)" >&2
exit 1
