#!/usr/bin/env bash
# A local sharded pgvision for trying scale-out: one coordinator and N shard clusters (each
# its own postmaster, Unix socket only), pgvision in every one, and on the coordinator the
# pgvision_cluster extension set up over the shards with vision_cluster.setup().
#
#   shards.sh start | stop | dsn [coord|shardI] | psql [args]
#   SHARDS (2; a power of two, as PL/Proxy needs), SHARD_BASE, SHARD_PORT (5440) override.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/cluster.sh
SHARDS=${SHARDS:-2}
SHARD_PORT=${SHARD_PORT:-5440}
SHARD_BASE=${SHARD_BASE:-$("$cluster" base-dir)/sharded}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PGBIN

node() {  # node NAME PORT COMMAND...
  local name=$1 port=$2; shift 2
  PGBASE=$SHARD_BASE/$name PGPORT_LOCAL=$port PGNAME=$name PGDB=pgvision "$cluster" "$@"
}
names() { echo coord; for ((i = 0; i < SHARDS; i++)); do echo "shard$i"; done; }
port_of() { if [ "$1" = coord ]; then echo "$SHARD_PORT"; else echo $((SHARD_PORT + 1 + ${1#shard})); fi; }
conninfo() { echo "host=$SHARD_BASE/$1/run port=$(port_of "$1") dbname=pgvision user=postgres"; }
sql() { PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -qAt -v ON_ERROR_STOP=1 "$(conninfo "$1")" -c "$2"; }

start() {
  case $SHARDS in 1|2|4|8|16|32|64) ;; *) echo "shards.sh: SHARDS must be a power of two" >&2; exit 2 ;; esac
  mkdir -p "$SHARD_BASE"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$SHARD_BASE"; fi
  local dsns=()
  for name in $(names); do
    node "$name" "$(port_of "$name")" start >/dev/null
    sql "$name" "CREATE EXTENSION IF NOT EXISTS pgvision CASCADE"
    [ "$name" = coord ] || dsns+=("'$(conninfo "$name")'")
  done
  sql coord "CREATE EXTENSION IF NOT EXISTS pgvision_cluster CASCADE"
  if [ "$(sql coord "SELECT count(*) FROM pg_foreign_server WHERE srvname = 'pgvision'")" = 0 ]; then
    sql coord "SELECT vision_cluster.setup(ARRAY[$(IFS=,; echo "${dsns[*]}")])" >/dev/null
  fi
  echo "coordinator: $(conninfo coord)"
  for ((i = 0; i < SHARDS; i++)); do echo "shard $i: $(conninfo "shard$i")"; done
}

stop() { for name in $(names); do node "$name" "$(port_of "$name")" stop >/dev/null; done; echo "shards stopped"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  dsn) conninfo "${2:-coord}" ;;
  psql) shift; exec "$PGBIN/psql" "$(conninfo coord)" "$@" ;;
  *) echo "usage: $0 start|stop|dsn [coord|shardI]|psql" >&2; exit 2 ;;
esac
