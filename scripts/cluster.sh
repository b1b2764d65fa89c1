#!/usr/bin/env bash
# The embedded default: a project-local Postgres 15 cluster for the demo, tests and trying
# pgvision. Data lives in .pg/ inside the checkout (git-ignored); the server listens on a
# Unix socket in .pg/run only (no TCP port to collide with), trusts local connections, and
# runs with the server-side venv on its Python path. As root, it runs as the `postgres` OS
# user (Postgres refuses root).
#
#   cluster.sh start|stop|status|dsn|psql [args]     (VENV, PGBIN, PGDB override defaults;
#   PGBASE, PGPORT_LOCAL and PGNAME place another cluster, as scripts/shards.sh does)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-/opt/pgvision/venv}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGDB=${PGDB:-pgvision}
PGPORT_LOCAL=${PGPORT_LOCAL:-5432}  # names the socket file; nothing listens on TCP

if [ "$(id -u)" -eq 0 ]; then run_as=postgres; else run_as=$(id -un); fi
as_owner() {
  if [ "$(id -un)" = "$run_as" ]; then "$@"; else runuser -u "$run_as" -- "$@"; fi
}

# The server's user must reach the data directory; a checkout under /root is not reachable,
# so fall back to a directory named after the checkout's path.
base=$root/.pg
if ! as_owner test -x "$root" 2>/dev/null; then
  base=/var/tmp/pgvision-$(printf %s "$root" | sha256sum | cut -c1-12)
fi
default_base=$base
base=${PGBASE:-$base}
data=$base/data run=$base/run log=$base/server.log

dsn() { echo "postgresql:///$PGDB?host=$run&port=$PGPORT_LOCAL&user=postgres"; }

running() { [ -f "$data/postmaster.pid" ] && as_owner "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
  if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$base" "$run"
    chown "$run_as" "$base" "$run"
    as_owner "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$data/postgresql.conf" <<EOF
# pgvision local cluster
listen_addresses = ''
unix_socket_directories = '$run'
port = $PGPORT_LOCAL
max_connections = 40
shared_buffers = 256MB
cluster_name = '${PGNAME:-pgvision}'
jit = off  # LLVM JIT and TensorFlow's LLVM crash a backend holding both
EOF
  fi
  # pg_cron runs vision.keep_current's schedules: its jobs connect over the Unix socket as the
  # role that scheduled them (trust, like every local connection here).
  if ! grep -q "^shared_preload_libraries = 'pg_cron'" "$data/postgresql.conf"; then
    cat >> "$data/postgresql.conf" <<EOF
shared_preload_libraries = 'pg_cron'
cron.database_name = '$PGDB'
cron.host = '$run'
EOF
    # a cluster made by an older checkout loads pg_cron once restarted (started below)
    if running; then as_owner "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null; fi
  fi
  if running; then return 0; fi
  site=$(ls -d "$VENV"/lib/python3*/site-packages 2>/dev/null | head -n1)
  [ -n "$site" ] || { echo "cluster.sh: no venv at $VENV; run make install" >&2; exit 1; }
  # The backend's Python finds TensorFlow and pgvision through PYTHONPATH.
  as_owner env PYTHONPATH="$site" TF_CPP_MIN_LOG_LEVEL=2 \
    "$PGBIN/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null
  as_owner "$PGBIN/psql" -qAt "$(dsn | sed "s|/$PGDB?|/postgres?|")" -c \
    "SELECT 1 FROM pg_database WHERE datname = '$PGDB'" | grep -q 1 ||
    as_owner "$PGBIN/createdb" -h "$run" -p "$PGPORT_LOCAL" -U postgres "$PGDB"
  echo "postgres running: data $data, log $log"
}

stop() { if running; then as_owner "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null; fi; echo "postgres stopped"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running ($data)"; else echo "stopped ($data)"; exit 3; fi ;;
  dsn) dsn ;;
  socket-dir) echo "$run" ;;
  base-dir) echo "$default_base" ;;
  cluster-dir) echo "$base" ;;
  psql) shift; exec psql "$(dsn)" "$@" ;;
  *) echo "usage: $0 start|stop|status|dsn|socket-dir|psql" >&2; exit 2 ;;
esac
