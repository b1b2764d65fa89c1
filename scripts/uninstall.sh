#!/usr/bin/env bash
# Remove what `make install` added (`make uninstall`): the project-local cluster (asked
# first: it holds data), the extension files, the `pgvision` command, the server-side venv
# with its models. Debian packages stay (other software may use them); the line to remove
# them is printed. Run as root (or through sudo).
#
#   YES=1       remove the local cluster without asking (CI; no terminal means "keep")
#   VENV, PG_CONFIG, BINDIR, PGBASE   as for install.sh and cluster.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-/opt/pgvision/venv}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
BINDIR=${BINDIR:-/usr/local/bin}
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
ask() {
  [ "${YES:-0}" = 1 ] && return 0
  if [ ! -t 0 ]; then echo "$1 -> no terminal to ask: kept (YES=1 removes it)"; return 1; fi
  read -r -p "$1 [y/N] " answer
  [[ "$answer" =~ ^[yY] ]]
}

# 1. The local cluster: its databases, features, models and the role vision_admin in it.
base=$(VENV=$VENV "$here/scripts/cluster.sh" cluster-dir)
if [ -d "$base/data" ]; then
  size=$(du -sh "$base" 2>/dev/null | cut -f1)
  if ask "delete the local cluster in $base ($size: every database in it, with its images, features and classifiers)?"; then
    VENV=$VENV "$here/scripts/cluster.sh" stop >/dev/null 2>&1 || true
    rm -rf "$base"
    say "deleted the local cluster $base"
  else
    say "kept the local cluster $base (its pgvision functions need the files removed below)"
  fi
fi

# 2. Extension files, as install.sh wrote them.
extdir="$("$PG_CONFIG" --sharedir)/extension"
rm -f "$extdir"/pgvision.control "$extdir"/pgvision--*.sql \
      "$extdir"/pgvision_cluster.control "$extdir"/pgvision_cluster--*.sql
say "removed the extension files from $extdir"

# 3. The command, if it is ours.
if [ -L "$BINDIR/pgvision" ] && [ "$(readlink "$BINDIR/pgvision")" = "$VENV/bin/pgvision" ]; then
  rm -f "$BINDIR/pgvision"
  say "removed $BINDIR/pgvision"
fi

# 4. The venv (TensorFlow, ONNX Runtime, pgvision, the models) and its cache.
rm -rf "$VENV" "$(dirname "$VENV")/cache"
rmdir "$(dirname "$VENV")" 2>/dev/null || true
say "removed $VENV"

cat <<NOTE
Left in place:
  - Debian packages (apt-get remove postgresql-15-plproxy postgresql-15-cron chromium ... if
    nothing else needs them);
  - pgvision in databases of other servers: there, DROP EXTENSION pgvision CASCADE in each
    database (it deletes their features and classifiers), then DROP ROLE vision_admin.
NOTE
