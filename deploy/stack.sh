#!/usr/bin/env bash
# The production profile on one machine: Postgres, Redis, an S3-compatible server (moto), the MLflow
# tracking server, the Dagster code server, daemon and webserver, and Celery workers, all on 127.0.0.1.
#
#   deploy/stack.sh up       start whatever is not running yet (idempotent), wait until each answers
#   deploy/stack.sh down     stop everything it started: TERM, wait, then KILL (whole process groups)
#   deploy/stack.sh status   which services run, with PIDs and addresses
#   deploy/stack.sh install  the Debian packages it needs (postgresql, redis-server), when missing
#
# Ports and folders come from deploy/stack.env (each overridable from the environment). State lives under
# $TRADAI_STACK_HOME (default .tradai/stack, git-ignored); PIDs in its pids/, logs in its logs/. Moto keeps
# its buckets in memory: `down` forgets the S3 data (candles, artifacts); Postgres keeps its databases.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
set -a
# shellcheck source=deploy/stack.env
source "$ROOT/deploy/stack.env"
set +a
BIN="$ROOT/.venv/bin"
export PATH="$BIN:$PATH"  # dagster-celery and the code server start `celery` and `dagster` by name
PIDS="$TRADAI_STACK_HOME/pids"
LOGS="$TRADAI_STACK_HOME/logs"
PGDATA="$TRADAI_STACK_HOME/postgres"
STOP_WAIT_S="${TRADAI_STACK_STOP_WAIT_S:-20}"
START_WAIT_S="${TRADAI_STACK_START_WAIT_S:-180}"

log() { echo "[stack] $*" >&2; }
die() { echo "[stack] error: $*" >&2; exit 1; }

pg_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$dir" && -x "$dir/initdb" ]] || return 1
    echo "$dir"
}

install_packages() {
    local missing=()
    pg_bin >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    ((${#missing[@]})) || return 0
    [[ "$(id -u)" == 0 ]] || die "missing ${missing[*]}: install them with apt-get (as root) and retry"
    log "installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts packaged services on install when it can; the stack runs its own on its own ports.
    service redis-server stop >/dev/null 2>&1 || true
    service postgresql stop >/dev/null 2>&1 || true
}

pid_of() { [[ -f "$PIDS/$1.pid" ]] && cat "$PIDS/$1.pid"; }

running() {
    local pid
    pid="$(pid_of "$1")" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# start NAME CMD...: run CMD in its own session (process group = its PID), output in logs/NAME.log.
start() {
    local name="$1"
    shift
    if running "$name"; then
        log "$name already running (pid $(pid_of "$name"))"
        return 0
    fi
    setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name.pid"
    log "$name started (pid $!, log $LOGS/$name.log)"
}

# wait_for NAME PYTHON-EXPR: poll until the expression is true, the process dies, or time runs out.
wait_for() {
    local name="$1" probe="$2" deadline=$((SECONDS + START_WAIT_S))
    until "$BIN/python" -c "$probe" >/dev/null 2>&1; do
        if [[ "$name" != postgres ]] && ! running "$name"; then
            tail -n 30 "$LOGS/$name.log" >&2 || true
            die "$name exited while starting (log above: $LOGS/$name.log)"
        fi
        ((SECONDS < deadline)) || {
            tail -n 30 "$LOGS/$name.log" >&2 || true
            die "$name did not answer within ${START_WAIT_S}s (log: $LOGS/$name.log)"
        }
        sleep 0.5
    done
}

http_ok() { echo "import urllib.request; urllib.request.urlopen('$1', timeout=2)"; }
port_open() { echo "import socket; socket.create_connection(('127.0.0.1', $1), timeout=2).close()"; }

as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    local bin
    bin="$(pg_bin)" || die "PostgreSQL is not installed: run 'deploy/stack.sh install' (or apt-get install postgresql)"
    if [[ "$(id -u)" == 0 ]] && ! runuser -u postgres -- test -x "$TRADAI_STACK_HOME"; then
        # Postgres runs as `postgres`, who cannot reach a data folder inside a private checkout.
        PGDATA="/var/tmp/tradai-stack-$(echo "$TRADAI_STACK_HOME" | md5sum | cut -c1-8)/postgres"
        mkdir -p "$(dirname "$PGDATA")"
        log "postgres cannot reach $TRADAI_STACK_HOME: its data goes to $PGDATA"
    fi
    echo "$PGDATA" >"$TRADAI_STACK_HOME/postgres.datadir"
    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
        mkdir -p "$PGDATA"
        [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$PGDATA"
        chmod 700 "$PGDATA"
        # Trust on loopback only (listen_addresses below); a real deployment uses passwords via PGPASSWORD.
        as_postgres "$bin/initdb" -D "$PGDATA" -U "$TRADAI_PG_USER" -A trust -E UTF8 >"$LOGS/initdb.log" 2>&1 \
            || die "initdb failed (log: $LOGS/initdb.log)"
    fi
    mkdir -p "$(dirname "$PGDATA")"
    if as_postgres "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        log "postgres already running"
    else
        local pglog="$LOGS/postgres.log"
        [[ "$PGDATA" == /var/tmp/* ]] && pglog="$(dirname "$PGDATA")/postgres.log"
        touch "$pglog"
        [[ "$(id -u)" == 0 ]] && chown postgres "$pglog"
        as_postgres "$bin/pg_ctl" -D "$PGDATA" -l "$pglog" -w -t 60 start \
            -o "-c listen_addresses=127.0.0.1 -p $TRADAI_PG_PORT -c unix_socket_directories='$PGDATA' -c max_connections=200" \
            >/dev/null || die "postgres did not start (log: $pglog)"
        log "postgres started on 127.0.0.1:$TRADAI_PG_PORT"
    fi
    head -n 1 "$PGDATA/postmaster.pid" >"$PIDS/postgres.pid"
    local db
    for db in "$TRADAI_DAGSTER_DB" mlflow optuna; do
        "$BIN/python" - "$db" <<'EOF'
import os, sys
import psycopg2
conn = psycopg2.connect(host=os.environ["TRADAI_PG_HOST"], port=os.environ["TRADAI_PG_PORT"],
                        user=os.environ["TRADAI_PG_USER"], dbname="postgres")
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (sys.argv[1],))
    if cur.fetchone() is None:
        cur.execute(f'CREATE DATABASE "{sys.argv[1]}"')
conn.close()
EOF
    done
}

create_aws_resources() {
    "$BIN/python" - <<'EOF'
import os
import boto3
s3 = boto3.client("s3")
existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for bucket in os.environ["TRADAI_S3_BUCKETS"].split():
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)  # ArcticDB and MLflow do not create buckets
name = os.environ["TRADAI_SNS_TOPIC_ARN"].rsplit(":", 1)[-1]
boto3.client("sns").create_topic(Name=name)
EOF
}

render_instance() {
    mkdir -p "$DAGSTER_HOME"
    cp "$ROOT/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
    sed -e "s/\${TRADAI_CODE_SERVER_HOST}/$TRADAI_CODE_SERVER_HOST/" \
        -e "s/\${TRADAI_CODE_SERVER_PORT}/$TRADAI_CODE_SERVER_PORT/" \
        "$ROOT/deploy/workspace.yaml" >"$DAGSTER_HOME/workspace.yaml"
    cat >"$TRADAI_STACK_HOME/celery.yaml" <<EOF
execution:
  config:
    broker: $TRADAI_CELERY_BROKER
    backend: $TRADAI_CELERY_BROKER
EOF
}

up() {
    [[ -x "$BIN/dagster" ]] || die "no environment in .venv: run 'make setup' first"
    install_packages
    mkdir -p "$PIDS" "$LOGS" "$TRADAI_HOME"
    [[ "$(id -u)" == 0 ]] && chmod 755 "$TRADAI_STACK_HOME" "$LOGS"
    render_instance
    start_postgres

    start redis redis-server --bind 127.0.0.1 --port "$TRADAI_REDIS_PORT" --save "" --appendonly no \
        --dir "$TRADAI_STACK_HOME"
    start s3 "$BIN/moto_server" -H 127.0.0.1 -p "$TRADAI_S3_PORT"
    wait_for redis "$(port_open "$TRADAI_REDIS_PORT")"
    wait_for s3 "$(http_ok "$AWS_ENDPOINT_URL/moto-api/")"
    create_aws_resources

    # MLflow 3 forks ~7 job workers (2.8 GB) unless job execution is off.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false start mlflow "$BIN/mlflow" server \
        --host 127.0.0.1 --port "$TRADAI_MLFLOW_PORT" --workers 1 \
        --backend-store-uri "postgresql+psycopg2://$TRADAI_PG_USER@$TRADAI_PG_HOST:$TRADAI_PG_PORT/mlflow" \
        --artifacts-destination "s3://tradai-mlflow/artifacts"
    start code-server "$BIN/dagster" code-server start -h 127.0.0.1 -p "$TRADAI_CODE_SERVER_PORT" \
        -m tradai.definitions -a defs --location-name tradai --working-directory "$ROOT"
    wait_for code-server "import subprocess, sys; sys.exit(subprocess.call(['$BIN/dagster', 'api', \
'grpc-health-check', '-p', '$TRADAI_CODE_SERVER_PORT', '--host', '127.0.0.1']))"
    start daemon "$BIN/dagster-daemon" run -w "$DAGSTER_HOME/workspace.yaml"
    start webserver "$BIN/dagster-webserver" -h 127.0.0.1 -p "$TRADAI_WEBSERVER_PORT" \
        -w "$DAGSTER_HOME/workspace.yaml"
    local i
    for ((i = 1; i <= TRADAI_CELERY_WORKERS; i++)); do
        start "celery-$i" "$BIN/dagster-celery" worker start -A dagster_celery.app \
            -y "$TRADAI_STACK_HOME/celery.yaml" -n "tradai-$i" -- --concurrency 1
    done
    wait_for mlflow "$(http_ok "$TRADAI_MLFLOW_URI/health")"
    wait_for webserver "$(http_ok "http://127.0.0.1:$TRADAI_WEBSERVER_PORT/server_info")"
    status
}

# alive PID: the process or any process of its group (its children: uvicorn, celery pool workers) is left.
alive() { kill -0 "$1" 2>/dev/null || kill -0 -- "-$1" 2>/dev/null; }

# stop NAME [SIGNAL]: SIGNAL (default TERM) to the process group, wait until the whole group is gone, then
# KILL what is left (a child left behind would keep holding the service's port).
stop() {
    local name="$1" sig="${2:-TERM}" pid deadline
    pid="$(pid_of "$name")" || return 0
    if alive "$pid"; then
        kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
        deadline=$((SECONDS + STOP_WAIT_S))
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
        if alive "$pid"; then
            log "$name (pid $pid) ignored SIG$sig for ${STOP_WAIT_S}s: KILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        fi
        log "$name stopped"
    fi
    rm -f "$PIDS/$name.pid"
}

down() {
    local f name
    # Clients first, then what they talk to. Celery workers, webserver, daemon, code server (which can
    # ignore TERM for over 15 s: the wait then ends in KILL), MLflow, moto, Redis; Postgres last (SIGINT
    # is its fast shutdown: TERM would wait for every client to leave).
    for f in "$PIDS"/celery-*.pid; do
        [[ -e "$f" ]] || continue
        name="$(basename "$f" .pid)"
        stop "$name"
    done
    for name in webserver daemon code-server mlflow s3 redis; do stop "$name"; done
    stop postgres INT
    if [[ -f "$TRADAI_STACK_HOME/postgres.datadir" && "$(cat "$TRADAI_STACK_HOME/postgres.datadir")" == /var/tmp/* ]]; then
        rm -rf "$(dirname "$(cat "$TRADAI_STACK_HOME/postgres.datadir")")"
    fi
}

status() {
    local f name
    for f in "$PIDS"/*.pid; do
        [[ -e "$f" ]] || continue
        name="$(basename "$f" .pid)"
        if running "$name"; then state="running (pid $(pid_of "$name"))"; else state="not running"; fi
        printf '  %-12s %s\n' "$name" "$state" >&2
    done
    log "UI http://127.0.0.1:$TRADAI_WEBSERVER_PORT  MLflow $TRADAI_MLFLOW_URI  S3 $AWS_ENDPOINT_URL  " \
        "Postgres 127.0.0.1:$TRADAI_PG_PORT  Redis 127.0.0.1:$TRADAI_REDIS_PORT"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    install) install_packages ;;
    *) die "usage: $0 up|down|status|install" ;;
esac
