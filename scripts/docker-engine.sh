#!/usr/bin/env bash
# Make sure a Docker engine answers. An engine that already answers (local, or remote through
# DOCKER_HOST) is left alone; otherwise a local dockerd is started in the background.
set -euo pipefail

LOG=${WARMBOX_DOCKERD_LOG:-/var/log/warmbox-dockerd.log}
PIDFILE=/var/run/docker.pid
CONTAINERD_PIDFILE=/var/run/docker/containerd/containerd.pid
WAIT_S=${WARMBOX_DOCKERD_WAIT_S:-60}

say() { printf 'docker-engine: %s\n' "$*"; }
answers() { timeout 10 docker info >/dev/null 2>&1; }

if answers; then
    exit 0
fi

# A remote engine is somebody else's to run: starting a local one would hide the real problem.
host=${DOCKER_HOST:-}
if [[ -n "$host" && "$host" != unix://* ]]; then
    say "DOCKER_HOST=$host does not answer; check the remote engine (and DOCKER_TLS_VERIFY /" \
        "DOCKER_CERT_PATH). Not starting a local engine." >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    say "no Docker engine answers and only root can start dockerd; start it and re-run" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
    say "dockerd is not installed (run scripts/setup.sh)" >&2
    exit 1
fi

# Is the process named in a pid file alive? A killed process that is not reaped yet (state Z)
# is not, though kill -0 and /proc still see it.
alive() {
    local file=$1 name=$2 pid comm state
    pid=$(cat "$file" 2>/dev/null || true)
    [[ -n "$pid" ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    [[ "$comm" == "$name" && -n "$state" && "$state" != Z ]]
}

pid=""
if alive "$PIDFILE" dockerd; then
    # A dockerd that is still starting up owns the pid file; wait for it instead of racing it.
    pid=$(cat "$PIDFILE")
    say "dockerd (pid $pid) is running but not answering yet; waiting"
else
    # An unclean kill leaves the pid files behind: dockerd then refuses to start ("pid file
    # found"), or waits for a dead containerd until it times out.
    if [[ -f "$PIDFILE" ]]; then
        say "removing stale $PIDFILE"
        rm -f "$PIDFILE"
    fi
    if ! alive "$CONTAINERD_PIDFILE" containerd; then
        rm -f "$CONTAINERD_PIDFILE"
    fi
fi

# Without an init system nothing may have mounted the cgroup v1 hierarchies dockerd needs.
if [[ -z "$pid" ]] && ! grep -q ' /sys/fs/cgroup' /proc/mounts && command -v cgroupfs-mount >/dev/null; then
    say "mounting cgroups"
    cgroupfs-mount
fi

if [[ -z "$pid" ]]; then
    args=(--bridge=none --iptables=false)
    [[ "$host" == unix://* ]] && args+=(-H "$host")
    mkdir -p "$(dirname "$LOG")"
    say "starting dockerd (log: $LOG)"
    # setsid + nohup: the engine must outlive this script and the test run that called it.
    setsid nohup dockerd "${args[@]}" </dev/null >>"$LOG" 2>&1 &
    pid=$!
fi

for ((i = 0; i < WAIT_S * 2; i++)); do
    if answers; then
        say "engine is up"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        say "dockerd exited; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
say "dockerd did not answer within ${WAIT_S}s; see $LOG" >&2
exit 1
