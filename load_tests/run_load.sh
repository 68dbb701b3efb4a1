#!/usr/bin/env bash
# Headless load test against a throwaway warmbox on loopback, then a summary with PASS/FAIL.
#
#   bash load_tests/run_load.sh [--profile normal|abuse|smoke|burst] [--users N] [--spawn-rate R]
#       [--duration 60s] [--pool-max 8] [--pool-min N] [--pool-initial N] [--port P]
#       [--warmup 20s] [--settle S] [--results-dir DIR] [--keep]
#
# Starts the service (fresh SQLite in a temp dir, sandbox on, pool pre-warmed to --pool-max),
# creates the accounts up front, warms it up with the same users (normal profile), counts the
# idle server's threads, fds and containers, runs Locust for a bounded time and user count, counts
# again once idle, stops the server (always: also on failure or Ctrl-C) and writes
# load_tests/results/<date>-<cores>cores-<profile>.md and .json.
# Both counts are taken the same way: --settle seconds idle, then a few cheap requests (anyio
# retires worker threads idle for 10 s only when new work arrives); so bounded pools that grew
# during the warm-up are in the baseline and only growth that the run leaves behind shows.
# Needs what `bash scripts/setup.sh` installs; runs it when the engine or the image is missing.
# Exit status: 0 every target passed, 1 a target missed, 2 the harness itself failed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'load: %s\n' "$*"; }
die() {
    say "$*" >&2
    exit 2
}

profile=normal users="" spawn_rate="" duration="" pool_max=8 pool_min="" pool_initial=""
port="" settle=12 warmup="" results_dir=load_tests/results keep=0
command_line="bash load_tests/run_load.sh $*"
while (($#)); do
    case "$1" in
    --profile) profile=$2 ;;
    --users) users=$2 ;;
    --spawn-rate) spawn_rate=$2 ;;
    --duration) duration=$2 ;;
    --pool-max) pool_max=$2 ;;
    --pool-min) pool_min=$2 ;;
    --pool-initial) pool_initial=$2 ;;
    --port) port=$2 ;;
    --settle) settle=$2 ;;
    --results-dir) results_dir=$2 ;;
    --keep) keep=1 && shift && continue ;;
    --warmup) warmup=$2 ;;
    -h | --help) sed -n '2,17p' "$0" && exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift 2
done

case "$profile" in
normal) : "${users:=50}" "${spawn_rate:=10}" "${duration:=60s}" "${warmup:=20s}" ;;
# No warm-up when abusing: it would spend the limits' windows before the measured run.
abuse) : "${users:=6}" "${spawn_rate:=6}" "${duration:=30s}" "${warmup:=0s}" ;;
smoke) : "${users:=3}" "${spawn_rate:=3}" "${duration:=5s}" "${warmup:=0s}" ;;
# 30 graders (LOAD_SUBMISSIONS_PER_USER submissions each, then they stop) + 1 interactive user.
burst) : "${users:=31}" "${spawn_rate:=31}" "${duration:=300s}" "${warmup:=0s}" ;;
*) die "--profile must be normal, abuse, smoke or burst" ;;
esac
: "${pool_min:=$pool_max}" "${pool_initial:=$pool_max}"
to_seconds() {
    local value=$1
    case "$value" in
    *m) value=$((${value%m} * 60)) ;;
    *s) value=${value%s} ;;
    esac
    [[ "$value" =~ ^[0-9]+$ ]] || die "durations take 30, 30s or 2m, not $1"
    echo "$value"
}
seconds=$(to_seconds "$duration") warmup_seconds=$(to_seconds "$warmup")
((users >= 1 && users <= 500 && seconds <= 1800 && warmup_seconds <= 600)) ||
    die "at most 500 users for 30 minutes (and a warm-up of at most 10)"

# --- prerequisites: an engine and the sandbox image (setup is idempotent but slow, so only if needed)
if ! docker info >/dev/null 2>&1 ||
    ! docker image inspect warmbox-sandbox-python:latest >/dev/null 2>&1; then
    say "Docker engine or sandbox image missing: running scripts/setup.sh"
    bash scripts/setup.sh
fi
command -v curl >/dev/null || die "curl is needed to wait for the service"

work=$(mktemp -d /tmp/warmbox-load.XXXXXX)
server_root="" server_pid=""

stop_server() {
    [[ -n "$server_root" ]] || return 0
    local target=${server_pid:-$server_root}
    kill -TERM "$target" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$server_root" 2>/dev/null || break
        sleep 0.3
    done
    if kill -0 "$server_root" 2>/dev/null; then
        say "server did not stop in 30 s; killing it"
        kill -KILL "$target" "$server_root" 2>/dev/null || true
    fi
    wait "$server_root" 2>/dev/null || true
    server_root=""
}

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local status=$?
    stop_server
    if ((status >= 2)) && [[ -f "$work/server.log" ]]; then
        say "last lines of the server log:" >&2
        tail -n 30 "$work/server.log" >&2 || true
    fi
    if ((keep)); then
        say "work files kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

random_secret() { head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'; }
setting_default() {
    uv run --frozen python -c \
        "from app.core.config import Settings; print(Settings.model_fields['$1'].default)"
}

# --- the throwaway service's settings (real environment variables win over any .env)
if [[ -z "$port" ]]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
host="http://127.0.0.1:$port"
export ENVIRONMENT=development DATA_DIR="$work/data" DATABASE_URL="" LOG_LEVEL=WARNING
SECRET_KEY="load-$(random_secret)$(random_secret)" ADMIN_PASSWORD=$(random_secret)
export SECRET_KEY ADMIN_PASSWORD ADMIN_USERNAME=load-admin
export SANDBOX_ENABLED=true POOL_MAX_SIZE="$pool_max" POOL_MIN_SIZE="$pool_min"
export POOL_INITIAL_SIZE="$pool_initial" RATE_LIMIT_ENABLED=true RATE_LIMIT_STORAGE_URI=memory://
if [[ "$profile" == abuse ]]; then
    # The shipped defaults, stated explicitly so that a developer's .env cannot change them.
    RATE_LIMIT_DEFAULT=$(setting_default rate_limit_default)
    RATE_LIMIT_EXECUTE=$(setting_default rate_limit_execute)
    RATE_LIMIT_LOGIN=$(setting_default rate_limit_login)
else
    # Measure the service, not the limiter: every load user shares 127.0.0.1.
    RATE_LIMIT_DEFAULT=100000/minute RATE_LIMIT_EXECUTE=100000/minute
    RATE_LIMIT_LOGIN=10000/minute
fi
export RATE_LIMIT_DEFAULT RATE_LIMIT_EXECUTE RATE_LIMIT_LOGIN
mkdir -p "$DATA_DIR"

say "profile $profile: $users users, ${seconds}s, pool $pool_initial/$pool_min/$pool_max" \
    "(initial/min/max), $host, work dir $work"
uv run --frozen alembic upgrade head >"$work/alembic.log" 2>&1 ||
    die "migrations failed: $(tail -n 5 "$work/alembic.log")"
uv run --frozen python -m app.serve --host 127.0.0.1 --port "$port" \
    >"$work/server.log" 2>&1 &
server_root=$!

ready=0
for _ in $(seq 1 180); do
    kill -0 "$server_root" 2>/dev/null || die "the server exited during start-up"
    if curl -fsS --max-time 2 "$host/health/ready" >"$work/ready.json" 2>/dev/null; then
        ready=1 && break
    fi
    sleep 0.5
done
((ready)) || die "the server was not ready within 90 s: $(cat "$work/ready.json" 2>/dev/null)"

export LOAD_PROFILE="$profile" LOAD_USER_PREFIX=load- LOAD_USER_COUNT="$users"
LOAD_USER_PASSWORD=$(random_secret)
export LOAD_USER_PASSWORD LOAD_ADMIN_USERNAME="$ADMIN_USERNAME"
export LOAD_ADMIN_PASSWORD="$ADMIN_PASSWORD" LOAD_OUTCOMES_FILE="$work/outcomes.json"
uv run --frozen python -m load_tests.provision --host "$host" --count "$users" \
    --prefix "$LOAD_USER_PREFIX" || die "could not create the load accounts"

# Bounded twice: Locust's own run time, and `timeout` in case Locust itself hangs. With a
# measured window (LOAD_MEASURE_S, see load_tests/scenarios/measure.py) the locustfile stops the
# run itself once every user has signed in and the window is over; --run-time is then only the
# outer bound, ramp-up included.
ramp_up_bound=120
run_locust() { # <run seconds> <csv prefix> <measured seconds, 0: all of it>
    LOAD_MEASURE_S=$3 LOAD_READY_DEADLINE_S=$ramp_up_bound \
        timeout --signal=INT --kill-after=30 $(($1 + ramp_up_bound + 90)) \
        uv run --frozen locust -f load_tests/locustfile.py --headless --only-summary \
        -u $((users + 1)) -r "$spawn_rate" -t "${1}s" --stop-timeout 15 \
        --host "$host" --csv "$2" --loglevel WARNING
}

count_idle() { # <output file>: what the server holds once idle, see the header
    say "idle for ${settle}s, then counting threads, fds and containers"
    sleep "$settle"
    for _ in 1 2 3; do curl -fsS --max-time 5 "$host/api/version" >/dev/null || true; done
    uv run --frozen python -m load_tests.leaks --pid "$server_root" --out "$1"
}

if ((warmup_seconds > 0)); then
    say "warm-up: $users users for ${warmup_seconds}s (not measured)"
    LOAD_OUTCOMES_FILE="" run_locust "$warmup_seconds" "$work/warmup" 0 >"$work/warmup.log" 2>&1 ||
        say "the warm-up had failures (see the measured run)"
fi
count_idle "$work/leaks_before.json"
server_pid=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["pid"])' \
    "$work/leaks_before.json")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

locust_status=0
if [[ "$profile" == normal ]]; then
    say "locust: $users users + 1 health probe, measured for ${seconds}s once all are signed in"
    LOAD_SERVER_PID=$server_pid run_locust $((seconds + ramp_up_bound)) "$work/locust" "$seconds" ||
        locust_status=$?
else # abuse and smoke: the first requests (the allowed ones, the sign-ins) belong in the figures
    say "locust: $users users + 1 health probe for ${seconds}s"
    LOAD_SERVER_PID=$server_pid run_locust "$seconds" "$work/locust" 0 || locust_status=$?
fi
((locust_status <= 1)) || die "locust failed (exit status $locust_status)"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

count_idle "$work/leaks_after.json"
stop_server
uv run --frozen python -m load_tests.leaks --server-pid "$server_pid" \
    --out "$work/leaks_stopped.json"

uv run --frozen python - "$work/meta.json" <<EOF
import json, os, subprocess, sys, time
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                       capture_output=True, text=True).stdout.strip()
memory_kb = int(open("/proc/meminfo").read().split()[1])
json.dump({
    "profile": "$profile", "users": $users, "spawn_rate": $spawn_rate,
    "duration": "${seconds}s", "pool_max": $pool_max, "pool_min": $pool_min,
    "pool_initial": $pool_initial, "warmup": "${warmup_seconds}s", "date": time.strftime("%Y-%m-%d"),
    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cores": os.cpu_count(),
    "memory_gb": round(memory_kb / 1024 / 1024, 1),
    "git_commit": commit.stdout.strip() + ("+dirty" if dirty else ""),
    "load_before": "$load_before", "load_after": "$load_after",
    "command": "$command_line", "locust_exit_status": $locust_status,
}, open(sys.argv[1], "w"), indent=2)
EOF

summary_status=0
uv run --frozen python -m load_tests.summarize --work-dir "$work" --results-dir "$results_dir" ||
    summary_status=$?
((summary_status <= 1)) || die "the summary could not be written"
exit "$summary_status"
