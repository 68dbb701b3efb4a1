#!/usr/bin/env bash
# A real warmbox cluster on loopback: PostgreSQL, Redis, extra Docker engines, several warmbox
# nodes and HAProxy in front of them. All state lives under .cluster/ (gitignored).
#   cluster.sh up       start every part that is not running yet (installs haproxy if missing)
#   cluster.sh down     stop exactly what `up` started and delete its state
#   cluster.sh status   one line per part; exit 0 only when every part answers
#   cluster.sh env      the export lines a test or a load test reads
#   cluster.sh engines up|down   only the extra engines (with their images): what the engine
#                       tests need; `engines env` prints CLUSTER_ENGINE_URLS
# Knobs: CLUSTER_PORT (HAProxy, default 8080), CLUSTER_NODES (3), CLUSTER_ENGINES (2 extra
# engines besides the machine's own), CLUSTER_LANGUAGES (images copied into the extra engines,
# default python), WARMBOX_CLUSTER_DIR (state directory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${WARMBOX_CLUSTER_DIR:-$ROOT/.cluster}
CLUSTER_PORT=${CLUSTER_PORT:-8080}
NODES=${CLUSTER_NODES:-3}
ENGINES=${CLUSTER_ENGINES:-2}
LANGUAGES=${CLUSTER_LANGUAGES:-python}
IMAGE_PREFIX=${SANDBOX_IMAGE_PREFIX:-warmbox-sandbox-}
IMAGE_TAG=${SANDBOX_IMAGE_TAG:-latest}
SERVICES=$STATE/services

say() { printf 'cluster: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Is the process named in a pid file alive (and not a zombie)?
alive() {
    local file=$1 pid state
    pid=$(cat "$file" 2>/dev/null || true)
    [[ -n "$pid" ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    [[ -n "$state" && "$state" != Z ]]
}

stop_pidfile() {
    local file=$1 what=$2 pid
    alive "$file" || return 0
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        alive "$file" || return 0
        sleep 0.25
    done
    say "$what (pid $pid) did not stop in 10 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

wait_until() {
    local what=$1 seconds=$2
    shift 2
    for ((i = 0; i < seconds * 4; i++)); do
        "$@" && return 0
        sleep 0.25
    done
    die "$what did not answer within ${seconds}s"
}

# --------------------------------------------------------------------------- PostgreSQL, Redis

services() { WARMBOX_SERVICES_DIR=$SERVICES bash scripts/services.sh "$@"; }

services_env() {
    services env | sed -e 's/WARMBOX_TEST_POSTGRES_URL/CLUSTER_DATABASE_URL/' \
        -e 's/WARMBOX_TEST_REDIS_URL/CLUSTER_REDIS_URL/'
}

# --------------------------------------------------------------------------- Docker engines

# Unix socket paths are limited to 107 bytes and containerd nests its sockets deep under the
# exec root: a deep checkout keeps engine sockets under /run instead.
engine_run_dir() {
    local n=$1
    if ((${#STATE} > 48)); then
        echo "/run/warmbox-cluster-$(printf '%s' "$STATE" | sha1sum | cut -c1-8)/engine$n"
    else
        echo "$STATE/engine$n/run"
    fi
}

engine_socket() { echo "$(engine_run_dir "$1")/docker.sock"; }
engine_answers() { timeout 10 docker -H "unix://$(engine_socket "$1")" info >/dev/null 2>&1; }

start_engine() {
    local n=$1 dir run
    dir=$STATE/engine$n
    run=$(engine_run_dir "$n")
    engine_answers "$n" && return 0
    mkdir -p "$dir/data" "$run/exec"
    rm -f "$run/docker.pid"
    # The same flags as the machine's engine (scripts/docker-engine.sh: no bridge, no iptables:
    # sandboxes never get a network), its own data root, exec root, pid file, socket and
    # containerd namespace, so the engines share nothing but the kernel and daemon.json's runtimes.
    setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
        --data-root "$dir/data" --exec-root "$run/exec" --pidfile "$run/docker.pid" \
        -H "unix://$run/docker.sock" \
        --containerd-namespace "warmbox-cluster-$n" \
        --containerd-plugins-namespace "warmbox-cluster-$n-plugins" \
        </dev/null >>"$dir/dockerd.log" 2>&1 &
    wait_until "engine $n" 60 engine_answers "$n"
    say "engine $n on unix://$run/docker.sock"
}

# The extra engines get the machine engine's images, byte for byte (same image id), so every
# engine runs the same sandbox. `docker save | docker load` skips layers the engine already has.
copy_images() {
    local n=$1 socket language image source target
    socket=unix://$(engine_socket "$n")
    for language in ${LANGUAGES//,/ }; do
        image=$IMAGE_PREFIX$language:$IMAGE_TAG
        source=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) ||
            die "$image is missing on the machine's engine: run scripts/build-images.sh"
        target=$(docker -H "$socket" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
        if [[ "$source" != "$target" ]]; then
            say "copying $image into engine $n"
            docker save "$image" | docker -H "$socket" load -q >/dev/null
        fi
    done
}

stop_engine() {
    local n=$1 socket ids
    socket=unix://$(engine_socket "$n")
    if engine_answers "$n"; then
        ids=$(docker -H "$socket" ps -aq)
        [[ -z "$ids" ]] || docker -H "$socket" rm -f $ids >/dev/null 2>&1 || true
    fi
    stop_pidfile "$(engine_run_dir "$n")/docker.pid" "engine $n"
    unmount_under "$STATE/engine$n"
    unmount_under "$(engine_run_dir "$n")"
}

# dockerd bind-mounts its data root onto itself and unmounts it when it stops cleanly; one killed
# with SIGKILL (the engine tests do) leaves that mount behind, and `rm -rf` then fails.
unmount_under() {
    local dir=$1 mount
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
        while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
}

# --------------------------------------------------------------------------- warmbox nodes

node_port() { cat "$STATE/node$1/port" 2>/dev/null || true; }
node_ready() {
    local port
    port=$(node_port "$1")
    [[ -n "$port" ]] && curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$port/health/ready"
}

engines_setting() {
    local list="unix:///var/run/docker.sock" n
    for ((n = 1; n <= ENGINES; n++)); do
        list+=",unix://$(engine_socket "$n")"
    done
    echo "$list"
}

node_environment() {
    local n=$1 port=$2
    eval "$(services_env)"
    # One signing key for every node: a token issued by one is valid on all. One webhook secret:
    # a receiver checks every delivery with one key, whichever node sends it.
    [[ -f "$STATE/secret_key" ]] || python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$STATE/secret_key"
    [[ -f "$STATE/webhook_secret" ]] ||
        python3 -c 'import base64, secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())' \
            >"$STATE/webhook_secret"
    cat <<EOF
DATABASE_URL=$CLUSTER_DATABASE_URL
RATE_LIMIT_STORAGE_URI=$CLUSTER_REDIS_URL
REDIS_URL=$CLUSTER_REDIS_URL
SECRET_KEY=$(cat "$STATE/secret_key")
WEBHOOK_SECRET=$(cat "$STATE/webhook_secret")
DATA_DIR=$STATE/node$n/data
NODE_ID=node$n
NODE_URL=http://127.0.0.1:$port
SANDBOX_ENGINES=$(engines_setting)
TRUSTED_PROXIES=127.0.0.1/32
EOF
}

start_node() {
    local n=$1 dir port
    dir=$STATE/node$n
    node_ready "$n" && return 0
    mkdir -p "$dir/data"
    port=$(free_port)
    echo "$port" >"$dir/port"
    node_environment "$n" "$port" >"$dir/env"
    (
        set -a
        # shellcheck disable=SC1091
        source "$dir/env"
        set +a
        setsid nohup uv run --frozen python -m app.serve --host 127.0.0.1 --port "$port" \
            </dev/null >>"$dir/server.log" 2>&1 &
        echo $! >"$dir/pid"
    )
}

migrate() {
    (
        eval "$(services_env)"
        DATABASE_URL=$CLUSTER_DATABASE_URL bash scripts/prestart.sh
    )
}

# --------------------------------------------------------------------------- HAProxy

haproxy_config() {
    local n
    cat <<EOF
global
    maxconn 4096
    stats socket $STATE/haproxy.sock mode 600 level admin

defaults
    mode http
    option forwardfor
    timeout connect 2s
    # A request whose node refuses the connection (killed, restarting) is sent to another one:
    # nothing reached the dead node, so even a POST is safe to send again.
    retries 2
    option redispatch 1
    timeout client 75s
    timeout server 75s
    # SSE and WebSocket streams stay open for as long as a run or session lasts.
    timeout tunnel 1h

frontend warmbox
    bind 127.0.0.1:$CLUSTER_PORT
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET /health/ready
    http-check expect status 200
    # A node that fails two checks a second apart gets no more requests.
    default-server inter 1s fall 2 rise 2
EOF
    for ((n = 1; n <= NODES; n++)); do
        echo "    server node$n 127.0.0.1:$(node_port "$n") check"
    done
}

haproxy_answers() { alive "$STATE/haproxy.pid"; }

start_haproxy() {
    haproxy_config >"$STATE/haproxy.cfg"
    haproxy -c -q -f "$STATE/haproxy.cfg" || die "haproxy rejected $STATE/haproxy.cfg"
    if haproxy_answers; then
        # New node ports after a restart: reload in place (-sf hands over the listening socket).
        haproxy -D -f "$STATE/haproxy.cfg" -p "$STATE/haproxy.pid" -sf "$(cat "$STATE/haproxy.pid")"
    else
        haproxy -D -f "$STATE/haproxy.cfg" -p "$STATE/haproxy.pid"
    fi
    say "HAProxy on http://127.0.0.1:$CLUSTER_PORT"
}

# One line per backend server: name and HAProxy's view of it (UP, DOWN, ...).
haproxy_servers() {
    python3 - "$STATE/haproxy.sock" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
for line in data.decode().splitlines():
    fields = line.split(",")
    if len(fields) > 17 and fields[0] == "nodes" and fields[1] not in ("BACKEND", "FRONTEND"):
        print(fields[1], fields[17])
EOF
}

# --------------------------------------------------------------------------- commands

up() {
    command -v haproxy >/dev/null 2>&1 || {
        say "installing haproxy"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null
    }
    bash scripts/setup.sh
    mkdir -p "$STATE"
    services start
    local n
    for ((n = 1; n <= ENGINES; n++)); do
        start_engine "$n"
        copy_images "$n"
    done
    migrate
    for ((n = 1; n <= NODES; n++)); do
        start_node "$n"
    done
    for ((n = 1; n <= NODES; n++)); do
        wait_until "node $n (see $STATE/node$n/server.log)" 120 node_ready "$n"
    done
    start_haproxy
    status
}

down() {
    local n
    stop_pidfile "$STATE/haproxy.pid" haproxy
    for ((n = 1; n <= NODES; n++)); do
        stop_pidfile "$STATE/node$n/pid" "node $n"
    done
    for ((n = 1; n <= ENGINES; n++)); do
        stop_engine "$n"
    done
    [[ -d "$SERVICES" ]] && services stop
    for ((n = 1; n <= ENGINES; n++)); do
        rm -rf "$(engine_run_dir "$n")"
    done
    rm -rf "$STATE"
    say "down"
}

status() {
    local ok=0 n
    if services status 2>/dev/null; then say "PostgreSQL and Redis: up"; else say "PostgreSQL/Redis: down" && ok=1; fi
    for ((n = 1; n <= ENGINES; n++)); do
        if engine_answers "$n"; then say "engine $n: up"; else say "engine $n: down" && ok=1; fi
    done
    for ((n = 1; n <= NODES; n++)); do
        if node_ready "$n"; then
            say "node $n: ready on 127.0.0.1:$(node_port "$n")"
        else
            say "node $n: not ready" && ok=1
        fi
    done
    if haproxy_answers; then
        say "HAProxy: up on 127.0.0.1:$CLUSTER_PORT"
        haproxy_servers | while read -r name state; do say "  $name: $state"; done
    else
        say "HAProxy: down" && ok=1
    fi
    return "$ok"
}

print_env() {
    services_env | sed 's/^/export /; s/^export export /export /'
    echo "export CLUSTER_URL=http://127.0.0.1:$CLUSTER_PORT"
    echo "export CLUSTER_DIR=$STATE"
}

engines() {
    local n urls=()
    case "${1:-}" in
    up)
        mkdir -p "$STATE"
        for ((n = 1; n <= ENGINES; n++)); do
            start_engine "$n"
            copy_images "$n"
        done
        ;;
    down)
        for ((n = 1; n <= ENGINES; n++)); do
            stop_engine "$n"
            rm -rf "$(engine_run_dir "$n")" "$STATE/engine$n"
        done
        ;;
    env)
        for ((n = 1; n <= ENGINES; n++)); do
            urls+=("unix://$(engine_socket "$n")")
        done
        echo "export CLUSTER_ENGINE_URLS=$(IFS=,; echo "${urls[*]}")"
        ;;
    *) die "usage: $0 engines up|down|env" ;;
    esac
}

case "${1:-}" in
up) up ;;
engines) engines "${2:-}" ;;
down) down ;;
status) status ;;
env) print_env ;;
*) die "usage: $0 up|down|status|env" ;;
esac
