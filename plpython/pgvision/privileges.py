"""Privilege checks: what pgvision stores about a table is for those who may read the
table, and what a role made (a classifier, an index, a table's shared results) is replaced
or dropped only by its owner or vision_admin."""

from .errors import INSUFFICIENT_PRIVILEGE, UNDEFINED_OBJECT, PgvisionError
from .spi import plan


def require_column(plpy, GD, function, argument, relid, column):
    """The SQL type of a table's column named by ``argument``; refuse a column it lacks."""
    rows = plpy.execute(plan(plpy, GD, """
        SELECT pg_catalog.format_type(atttypid, atttypmod) AS type FROM pg_catalog.pg_attribute
        WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped""",
        ["oid", "name"]), [relid, column])
    if not rows:
        raise PgvisionError(function, f'argument "{argument}": table '
                            f"{table_name(plpy, GD, relid)} has no column {column!r}",
                            UNDEFINED_OBJECT)
    return rows[0]["type"]


def require_select(plpy, GD, function, relid, purpose):
    """Refuse unless the caller may SELECT the table (whatever pgvision stores about a table
    is only for those who may read it)."""
    row = plpy.execute(plan(plpy, GD, "SELECT pg_catalog.has_table_privilege($1, 'SELECT') AS ok",
                            ["oid"]), [relid])[0]
    if not row["ok"]:
        name = table_name(plpy, GD, relid)
        raise PgvisionError(function, f"permission denied for table {name}: {purpose} needs "
                            "SELECT on it", INSUFFICIENT_PRIVILEGE,
                            hint=f"GRANT SELECT ON {name} TO ... (its owner decides).")


def table_name(plpy, GD, relid):
    """A table's name as SQL prints it (schema-qualified under a pinned search_path)."""
    return plpy.execute(plan(plpy, GD, "SELECT $1::pg_catalog.regclass::text AS name",
                             ["oid"]), [relid])[0]["name"]


def require_table_owner(plpy, GD, function, relid, what):
    """Refuse unless the caller owns the table (is a member of its owning role) or is
    vision_admin: results every reader of the table shares (clusters, its map, cached
    neighbour lists) are written by those who answer for the table, never by a reader."""
    row = plpy.execute(plan(plpy, GD, """
        SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') AS owns,
               pg_catalog.pg_has_role('vision_admin', 'MEMBER') AS admin,
               pg_catalog.pg_get_userbyid(c.relowner) AS owner
        FROM pg_catalog.pg_class c WHERE c.oid = $1""", ["oid"]), [relid])[0]
    if not (row["owns"] or row["admin"]):
        raise PgvisionError(function, f"{what} of table {table_name(plpy, GD, relid)} are "
                            f"shared by every reader: only its owner ({row['owner']}) or "
                            "vision_admin may compute them", INSUFFICIENT_PRIVILEGE,
                            hint="Ask the table's owner to run it; readers read the results.")


def require_owner(plpy, GD, function, what, owner):
    """Refuse unless the caller owns ``what`` (e.g. "classifier 'kind'") or is vision_admin:
    only they replace or drop it."""
    row = plpy.execute(plan(plpy, GD, "SELECT CURRENT_USER AS me, pg_catalog.pg_has_role("
                            "'vision_admin', 'MEMBER') AS admin"))[0]
    if owner != row["me"] and not row["admin"]:
        raise PgvisionError(function, f"{what} belongs to role {owner}: only its owner (or "
                            "vision_admin) may replace or drop it", INSUFFICIENT_PRIVILEGE)
