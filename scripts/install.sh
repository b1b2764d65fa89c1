#!/usr/bin/env bash
# Install everything pgvision needs on a Debian 12 server, idempotently; only what is missing.
# Used by `make install` and by docker/Dockerfile. Run as root (or through sudo).
#
#   VENV        server-side virtualenv the Postgres backend imports from (/opt/pgvision/venv)
#   PG_CONFIG   pg_config of the target Postgres (/usr/lib/postgresql/15/bin/pg_config)
#   WITH_DEV    1: also the client tools for tests, demo and benchmarks (and chromium)
#   RUNTIME_ONLY 1: serving only, as docker/Dockerfile's runtime stage: no TensorFlow, no
#               node; the models must already be in $VENV/share/pgvision/models (the build
#               stage converts them)
#   BINDIR      where the `pgvision` command is linked (/usr/local/bin)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-/opt/pgvision/venv}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
WITH_DEV=${WITH_DEV:-0}
RUNTIME_ONLY=${RUNTIME_ONLY:-0}
BINDIR=${BINDIR:-/usr/local/bin}
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: needs root for apt-get and $VENV; run it through sudo" >&2
  exit 1
fi

# 1. Debian packages ----------------------------------------------------------------------
# postgresql-15 holds the contrib modules (postgres_fdw): no postgresql-contrib, which on the
# PGDG repository of the official Docker image would pull in the newest major version.
packages=(postgresql-15 postgresql-plpython3-15 postgresql-15-plproxy postgresql-15-cron
          python3-venv)
if [ "$RUNTIME_ONLY" != 1 ] && ! { command -v node && command -v npm; } >/dev/null; then
  packages+=(nodejs npm)
fi
# headless Chromium opens the pages `pgvision similar --html` writes, in tests/test_cli.py
if [ "$WITH_DEV" = 1 ]; then packages+=(chromium); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Server-side virtualenv, from the interpreter plpython3u links ------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV from /usr/bin/python3 (the Python plpython3u runs)"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
pip_install() { "$VENV/bin/pip" install -q --disable-pip-version-check "$@" 2>&1 \
  | grep -v "^WARNING: Location" || true; }
stamp_ok() { [ -f "$1" ] && cmp -s "$1" "$2"; }
requirements=requirements.txt
[ "$RUNTIME_ONLY" = 1 ] && requirements=requirements-runtime.txt
cat "$here/$requirements" "$here/requirements-runtime.txt" > "$VENV/.pgvision-wanted"
if ! stamp_ok "$VENV/.pgvision-requirements" "$VENV/.pgvision-wanted"; then
  say "pip install -r $requirements (TensorFlow: a few minutes the first time)"
  pip_install -r "$here/$requirements"
  cp "$VENV/.pgvision-wanted" "$VENV/.pgvision-requirements"
fi
rm -f "$VENV/.pgvision-wanted"
if [ "$WITH_DEV" = 1 ] && ! stamp_ok "$VENV/.pgvision-requirements-dev" "$here/requirements-dev.txt"; then
  say "pip install -r requirements-dev.txt"
  pip_install -r "$here/requirements-dev.txt"
  cp "$here/requirements-dev.txt" "$VENV/.pgvision-requirements-dev"
fi
# TF.js itself, the reference the tests check the nsfwjs conversion against.
tfjs_dir="$(dirname "$VENV")/cache"
if [ "$WITH_DEV" = 1 ] && [ ! -d "$tfjs_dir/node_modules/@tensorflow/tfjs" ]; then
  say "npm install @tensorflow/tfjs (test reference for the model conversion)"
  mkdir -p "$tfjs_dir"
  npm install --silent --no-save --prefix "$tfjs_dir" @tensorflow/tfjs@4.22.0 >/dev/null
fi
# The package itself, always (cheap): the backend must run this checkout's code; with it
# the `pgvision` command, and the migrations that `pgvision migrate` runs.
rm -rf "$here/plpython/build"
pip_install --no-deps --force-reinstall "$here/plpython"
rm -rf "$here/plpython/build" "$here"/plpython/*.egg-info
mkdir -p "$VENV/share/pgvision" "$BINDIR"
rm -rf "$VENV/share/pgvision/migrations"
cp -r "$here/migrations" "$VENV/share/pgvision/migrations"
rm -rf "$VENV/share/pgvision/migrations/__pycache__" "$VENV/share/pgvision/migrations/versions/__pycache__"
ln -sf "$VENV/bin/pgvision" "$BINDIR/pgvision"

# 3. Extension files where Postgres finds them (like PGXS's `make install`) ------------------
version=$("$VENV/bin/python" -c 'import pgvision; print(pgvision.__version__)')
extdir="$("$PG_CONFIG" --sharedir)/extension"
# pgvision_cluster (the coordinator of a sharded pgvision) shares pgvision's version.
# sql/<ext>.sql is the whole current API: it becomes <ext>--<version>.sql (as pgvector's
# Makefile does); sql/<ext>--<from>--<to>.sql upgrade older installations.
# A whole-API script an earlier install left for its own version (<ext>--<old>.sql, not in
# sql/) would shadow the upgrade path to that version with what that checkout's head held:
# remove it, so every older version is reached from the scripts this checkout ships.
for ext in pgvision pgvision_cluster; do
  for old in "$extdir/$ext"--*.sql; do
    case "$old" in *--*--*) continue ;; esac
    [ -e "$here/sql/$(basename "$old")" ] || rm -f "$old"
  done
  sed "s/@VERSION@/$version/" "$here/sql/$ext.control.in" > "$extdir/$ext.control"
  install -m 644 "$here/sql/$ext.sql" "$extdir/$ext--$version.sql"
  install -m 644 "$here"/sql/"$ext"--*.sql "$extdir/"
done

# 4. Offline pretrained models (nsfwjs npm package → Keras), once ---------------------------
if [ "$RUNTIME_ONLY" = 1 ]; then
  ls "$VENV"/share/pgvision/models/*.onnx >/dev/null 2>&1 || {
    echo "install.sh: RUNTIME_ONLY=1 needs the converted models in $VENV/share/pgvision/models" \
         "(docker/Dockerfile copies them from its build stage)" >&2; exit 1; }
else
  "$VENV/bin/python" "$here/tools/import_nsfwjs.py" --venv "$VENV"
  # ... and as ONNX, which backends load in well under a second (pgvision.runtimes).
  "$VENV/bin/python" "$here/tools/convert_onnx.py" --venv "$VENV"
fi

chmod -R a+rX "$VENV"
say "installed pgvision $version: extension files in $extdir, Python in $VENV, command $BINDIR/pgvision"
