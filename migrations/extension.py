"""What each revision does to the extensions: pgvision, and pgvision_cluster where a
coordinator has it (it shares pgvision's version and moves with it).

Two rules keep users' rows safe:

- an upgrade never moves an extension backwards: a revision whose version is below what is
  installed does nothing (``CREATE EXTENSION pgvision`` at 0.10.0 then ``pgvision migrate``
  must not walk the downgrade scripts to 0.2.0 and back up, which dropped every table
  added since);
- a downgrade that would drop stored rows (a table that holds rows, a column of a table that
  holds rows, fewer rows) is refused unless asked for with ``-x allow_data_loss=1``
  (``pgvision migrate --to REV --allow-data-loss``). The downgrade scripts themselves refuse
  to run unless ``pgvision.allow_downgrade`` is on, which only this module (and a person who
  sets it by hand) does.
"""

import os

# pgvision_cluster moves with pgvision, in the same direction only (upgrade: {op} is <).
_CLUSTER = """DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgvision_cluster'
             AND pg_catalog.string_to_array(extversion, '.')::int[]
                 {op} pg_catalog.string_to_array('{version}', '.')::int[]) THEN
    ALTER EXTENSION pgvision_cluster UPDATE TO '{version}';
  END IF;
END $$"""

ALLOW_DATA_LOSS = "PGVISION_ALLOW_DATA_LOSS"

# Every user table of the pgvision extensions, with its row count and columns.
_TABLES = """
SELECT c.oid::regclass::text AS name, a.columns
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname LIKE 'pgvision%%'
JOIN pg_catalog.pg_class c ON c.oid = d.objid AND d.classid = 'pg_catalog.pg_class'::regclass
     AND c.relkind IN ('r', 'p')
CROSS JOIN LATERAL (SELECT array_agg(attname::text ORDER BY attname) AS columns
                    FROM pg_catalog.pg_attribute
                    WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped) a
WHERE d.deptype = 'e'
"""


def parse_version(text):
    """'0.10.0' -> (0, 10, 0): versions compare as numbers, not as text."""
    return tuple(int(part) for part in text.split("."))


def installed_version(connection, extension="pgvision"):
    row = connection.exec_driver_sql(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = %(e)s",
        {"e": extension}).first()
    return row[0] if row else None


def upgrade_to(op, version):
    """ALTER EXTENSION ... UPDATE TO version, only where that moves it forwards."""
    installed = installed_version(op.get_bind())
    if installed is not None and parse_version(installed) >= parse_version(version):
        return  # adopted: already there or past it; never walk backwards
    op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{version}'")
    op.execute(_CLUSTER.format(version=version, op="<"))


def data_loss_allowed():
    from alembic import context
    x = context.get_x_argument(as_dictionary=True)
    value = x.get("allow_data_loss", os.environ.get(ALLOW_DATA_LOSS, ""))
    return value.lower() in ("1", "true", "yes", "on")


def stored_rows(connection):
    """{table: (row count, columns)} of the extensions' tables."""
    tables = {}
    for name, columns in connection.exec_driver_sql(_TABLES).all():
        # the installed models are registered again by CREATE EXTENSION: not users' rows
        where = " WHERE NOT builtin" if name == "vision.model_store" else ""
        count = connection.exec_driver_sql(f"SELECT count(*) FROM {name}{where}").scalar()
        tables[name] = (count, tuple(columns))
    return tables


# A downgrade that renames a table, and moves a column's values into another before dropping
# it, loses nothing: 0.17.0 -> 0.16.0 makes vision.stored_features's half-precision vectors
# real[] again, in the table's old name.
RENAMED_BY_DOWNGRADES = {"vision.stored_features": "vision.features"}
MOVED_BY_DOWNGRADES = {("vision.stored_features", "half"),
                       # 0.18.0 -> 0.17.0 refuses while an index is not HNSW, so these hold
                       # only what 0.17.0 implies ('hnsw', no lists, no probes)
                       ("vision.indexes", "method"), ("vision.indexes", "lists"),
                       ("vision.indexes", "probes")}


def losses(before, after):
    """What a change from ``before`` to ``after`` (both from :func:`stored_rows`) drops."""
    lost = []
    for name, (count, columns) in sorted(before.items()):
        if not count:
            continue
        now_name = name if name in after else RENAMED_BY_DOWNGRADES.get(name)
        if now_name not in after:
            lost.append(f"table {name} ({count} rows)")
            continue
        now, now_columns = after[now_name]
        if now < count:
            lost.append(f"{count - now} of {count} rows of {name}")
        dropped = sorted(set(columns) - set(now_columns)
                         - {column for table, column in MOVED_BY_DOWNGRADES if table == name})
        if dropped:
            lost.append(f"column(s) {', '.join(dropped)} of {name} ({count} rows)")
    return lost


def guarded(op, what, change):
    """Run ``change()`` (a downgrade) under pgvision.allow_downgrade, and refuse it when it
    drops stored rows unless data loss was asked for; the refusal rolls the whole migration
    back (Alembic runs it in one transaction)."""
    connection = op.get_bind()
    before = stored_rows(connection)
    connection.exec_driver_sql("SELECT pg_catalog.set_config('pgvision.allow_downgrade', "
                               "'on', true)")
    # No finally: a refusal inside change() aborts the transaction, whose rollback takes this
    # transaction-local setting with it; a statement there would only replace the refusal
    # with "current transaction is aborted".
    change()
    connection.exec_driver_sql("SELECT pg_catalog.set_config('pgvision.allow_downgrade', "
                               "'off', true)")
    lost = losses(before, stored_rows(connection))
    if lost and not data_loss_allowed():
        raise RuntimeError(
            f"refusing {what}: it would delete stored rows: {'; '.join(lost)}. Nothing was "
            "changed. Back them up (pg_dump), then pass --allow-data-loss "
            "(alembic: -x allow_data_loss=1) to downgrade anyway.")


def downgrade_to(op, version):
    def change():
        op.execute(_CLUSTER.format(version=version, op=">"))
        op.execute(f"ALTER EXTENSION pgvision UPDATE TO '{version}'")
    guarded(op, f"the downgrade of pgvision to {version}", change)


def drop_extension(op):
    guarded(op, "dropping the pgvision extension",
            lambda: op.execute("DROP EXTENSION IF EXISTS pgvision CASCADE"))
