#!/usr/bin/env bash
# Throwaway PostgreSQL 15 and Redis for the test suite, on free loopback ports, with all their
# state under .test-services/ (gitignored).
#   services.sh start   start both (no-op for one that already answers)
#   services.sh env     print the export lines the tests read
#   services.sh stop    stop both and delete their data
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${WARMBOX_SERVICES_DIR:-$PWD/.test-services}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=postgres # the database role; trust auth, loopback only
PG_DB=warmbox

say() { printf 'services: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# PostgreSQL refuses to run as root, so as root it runs as the `postgres` OS user.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_dir() {
    # The data dir lives in the repo unless the postgres user cannot reach it (a clone under a
    # private home directory); then under /tmp, remembered in the state dir.
    if [[ -f "$STATE/postgres.path" ]]; then
        cat "$STATE/postgres.path"
    else
        echo "$STATE/postgres"
    fi
}

pg_port() { cat "$STATE/postgres.port" 2>/dev/null || true; }
redis_port() { cat "$STATE/redis.port" 2>/dev/null || true; }

pg_answers() {
    local port
    port=$(pg_port)
    [[ -n "$port" ]] && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -d "$PG_DB" -U "$PG_USER"
}

redis_answers() {
    local port
    port=$(redis_port)
    [[ -n "$port" ]] && [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]
}

wait_for() {
    local what=$1 check=$2
    for ((i = 0; i < 60; i++)); do
        "$check" && return 0
        sleep 0.5
    done
    die "$what did not answer within 30s"
}

choose_pg_dir() {
    local dir=$STATE/postgres
    mkdir -p "$dir"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            rmdir "$dir"
            dir=$(mktemp -d /tmp/warmbox-pg.XXXXXX)
            chown postgres: "$dir"
            echo "$dir" >"$STATE/postgres.path"
        fi
    fi
    echo "$dir"
}

# A killed postmaster leaves postmaster.pid behind; postgres refuses to start while that pid still
# looks alive, which includes a zombie nobody has reaped yet.
clear_stale_pidfile() {
    local file=$1 pid state
    [[ -f "$file" ]] || return 0
    pid=$(head -n 1 "$file")
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    if [[ -z "$state" || "$state" == Z ]]; then
        rm -f "$file"
    fi
}

start_postgres() {
    pg_answers && return 0
    [[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL 15 is not installed (run scripts/setup.sh)"
    local dir port
    if [[ -f "$(pg_dir)/data/PG_VERSION" ]]; then
        dir=$(pg_dir)
        clear_stale_pidfile "$dir/data/postmaster.pid"
    else
        dir=$(choose_pg_dir)
        as_pg "$PG_BIN/initdb" -D "$dir/data" -U "$PG_USER" --auth=trust --encoding=UTF8 \
            --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log"
    fi
    port=$(free_port)
    echo "$port" >"$STATE/postgres.port"
    # Durability is pointless for a throwaway server; turning it off makes tests faster.
    # No unix socket: its path could exceed the 107-byte limit in a deep checkout.
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -s -w -t 30 start -o \
        "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c fsync=off \
-c synchronous_commit=off -c full_page_writes=off -c max_connections=200" ||
        die "PostgreSQL did not start; see $dir/server.log"
    wait_for PostgreSQL pg_answers_server
    if ! as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres -tAqc \
        "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
        as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER" "$PG_DB"
    fi
    say "PostgreSQL on 127.0.0.1:$port"
}

pg_answers_server() {
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$(pg_port)" -U "$PG_USER" -d postgres
}

start_redis() {
    redis_answers && return 0
    command -v redis-server >/dev/null 2>&1 || die "redis-server is not installed (run scripts/setup.sh)"
    local port
    port=$(free_port)
    echo "$port" >"$STATE/redis.port"
    # No RDB snapshots, no AOF: nothing of a test run should outlive it.
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
        --dir "$STATE" --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" ||
        die "redis-server did not start; see $STATE/redis.log"
    wait_for Redis redis_answers
    say "Redis on 127.0.0.1:$port"
}

stop_all() {
    local dir
    dir=$(pg_dir)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -s -m fast -w stop >/dev/null 2>&1 || true
    fi
    if redis_answers; then
        redis-cli -h 127.0.0.1 -p "$(redis_port)" shutdown nosave >/dev/null 2>&1 || true
    elif [[ -f "$STATE/redis.pid" ]]; then
        kill "$(cat "$STATE/redis.pid")" 2>/dev/null || true
    fi
    [[ "$dir" == "$STATE"/* ]] || rm -rf "$dir"
    rm -rf "$STATE"
}

print_env() {
    pg_answers || die "PostgreSQL is not running; run: bash scripts/services.sh start"
    redis_answers || die "Redis is not running; run: bash scripts/services.sh start"
    echo "export WARMBOX_TEST_POSTGRES_URL=postgresql+psycopg://$PG_USER@127.0.0.1:$(pg_port)/$PG_DB"
    echo "export WARMBOX_TEST_REDIS_URL=redis://127.0.0.1:$(redis_port)/0"
}

case "${1:-}" in
start)
    mkdir -p "$STATE"
    start_postgres
    start_redis
    ;;
stop) stop_all ;;
env) print_env ;;
status) pg_answers && redis_answers ;;
*) die "usage: $0 start|stop|env|status" ;;
esac
