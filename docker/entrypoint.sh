#!/usr/bin/env bash
# Start Debian's cluster with the venv on PYTHONPATH; set the postgres password from
# POSTGRES_PASSWORD and create the extension in the `postgres` database on first start.
set -euo pipefail
export PYTHONPATH=/opt/pgvision/venv/lib/python3.11/site-packages
pg_ctlcluster 15 main start
if [ -n "${POSTGRES_PASSWORD:-}" ]; then
  psql -qc "ALTER USER postgres PASSWORD '${POSTGRES_PASSWORD//\'/\'\'}'"
fi
psql -qc "CREATE EXTENSION IF NOT EXISTS pgvision CASCADE"
pg_ctlcluster 15 main stop
exec /usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main \
  -c config_file=/etc/postgresql/15/main/postgresql.conf
