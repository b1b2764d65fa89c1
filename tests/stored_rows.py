"""One row in every table of the pgvision extensions, and checksums of what they hold: what
the migration tests compare before and after each command (tests/test_migrations.py).

The rows are written as the superuser (row-level security does not apply to it), by column
type and constraint, so the same code fills any version's tables."""

import re

# a value for a NOT NULL column without a default, by type
_BY_TYPE = {
    "smallint": "1", "integer": "1", "bigint": "1", "real": "0.5", "double precision": "0.5",
    "numeric": "0.5", "text": "'x'", "name": "CURRENT_USER", "character varying": "'x'",
    "bytea": "'\\x00'::bytea", "jsonb": "'{\"kept\": true}'", "json": "'{}'",
    "boolean": "false", "timestamp with time zone": "now()", "pg_snapshot": "pg_current_snapshot()",
    "xid8": "pg_current_xact_id()", "oid": "1", "real[]": "'{0.5,0.25}'",
    "double precision[]": "'{0.5,0.25}'", "bigint[]": "'{1}'", "integer[]": "'{1}'",
    "text[]": "'{x}'", "boolean[]": "'{true}'", "regclass": "'public.migrated_images'::regclass",
}

_COLUMNS = """
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL),
       a.attnotnull AND a.atthasdef IS FALSE AND a.attidentity = '' AS required
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum"""

_TABLES = """
SELECT c.oid::regclass::text
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname LIKE 'pgvision%%'
JOIN pg_catalog.pg_class c ON c.oid = d.objid AND d.classid = 'pg_catalog.pg_class'::regclass
     AND c.relkind IN ('r', 'p')
WHERE d.deptype = 'e'
ORDER BY 1"""


def _query(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def tables(conn):
    return [name for (name,) in _query(conn, _TABLES)]


def _choices(conn, table, column):
    """Literals a CHECK constraint allows for the column (IN lists, ANY arrays, regexes)."""
    found = []
    for (definition,) in _query(conn, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                      "WHERE conrelid = %s::regclass AND contype = 'c'",
                                (table,)):
        if not re.search(rf"\b{column}\b", definition):
            continue
        if "~" in definition and re.search(r"\[0-9a-f\]\{64\}", definition):
            found.append("'" + "a" * 64 + "'")
        elif "~" in definition:
            found.append("'x'")
        literal = re.search(r"'([^']*)'::text", definition)
        if literal and "~" not in definition:
            found.append(f"'{literal.group(1)}'")
    return found


def _one_of(conn, table):
    """The first column of each CHECK that wants exactly one of two columns set
    (``(a IS NULL) <> (b IS NULL)``): filled although it may be NULL."""
    found = set()
    for (definition,) in _query(conn, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                      "WHERE conrelid = %s::regclass AND contype = 'c'",
                                (table,)):
        pair = re.search(r"\((\w+) IS NULL\) <> \((\w+) IS NULL\)", definition)
        if pair:
            found.add(pair.group(1))
    return found


def _references(conn, table):
    """{column: (referenced table, referenced column)} of single-column foreign keys."""
    refs = {}
    for cols, ref, ref_cols in _query(conn, """
            SELECT (SELECT array_agg(attname::text) FROM pg_attribute
                    WHERE attrelid = conrelid AND attnum = ANY (conkey)),
                   confrelid::regclass::text,
                   (SELECT array_agg(attname::text) FROM pg_attribute
                    WHERE attrelid = confrelid AND attnum = ANY (confkey))
            FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'""", (table,)):
        if len(cols) == 1:
            refs[cols[0]] = (ref, ref_cols[0])
    return refs


def fill(conn):
    """One row in every table of the extensions (a user's model in vision.model_store),
    about the table public.migrated_images; returns the tables filled."""
    autocommit, conn.autocommit = conn.autocommit, False
    try:
        filled = _fill(conn)
        conn.commit()
        return filled
    finally:
        conn.autocommit = autocommit


def _fill(conn):
    _query(conn, "CREATE TABLE IF NOT EXISTS public.migrated_images "
                 "(id bigint PRIMARY KEY, image bytea)")
    _query(conn, "INSERT INTO public.migrated_images VALUES (1, '\\x00') ON CONFLICT DO NOTHING")
    _query(conn, """
        INSERT INTO vision.model_store (name, model_path, sha256, input_height, input_width,
                                        preprocessing, dims)
        VALUES ('users_model', '/nowhere.keras', repeat('b', 64), 32, 32, 'raw', 2)""")
    filled = ["vision.model_store"]
    pending = [t for t in tables(conn) if t != "vision.model_store"]
    for _ in range(3):  # a table whose foreign key points at one filled later: next round
        failed = []
        for table in pending:
            refs = _references(conn, table)
            wanted = _one_of(conn, table)
            names, values = [], []
            for column, type_, required in _query(conn, _COLUMNS, (table,)):
                if column in refs:
                    ref_table, ref_column = refs[column]
                    value = (f"(SELECT {ref_column} FROM {ref_table} ORDER BY 1 DESC LIMIT 1)")
                elif not required and column not in wanted:
                    continue
                else:
                    choices = _choices(conn, table, column)
                    value = choices[0] if choices else _BY_TYPE[type_]
                if column == "model":
                    value = "'users_model'"
                elif column == "sha256":  # a store file's name, as pgvision writes it
                    value = "repeat('c', 64)"
                names.append(column)
                values.append(value)
            try:
                with conn.cursor() as cur:
                    cur.execute("SAVEPOINT fill")
                    # DO NOTHING: a trigger may have written the row already (the
                    # feature store's writes vision.feature_versions)
                    cur.execute(f"INSERT INTO {table} ({', '.join(names)}) "
                                f"VALUES ({', '.join(values)}) ON CONFLICT DO NOTHING")
                    cur.execute("RELEASE SAVEPOINT fill")
                filled.append(table)
            except Exception as err:  # noqa: BLE001 - retried next round, reported after
                _query(conn, "ROLLBACK TO SAVEPOINT fill")
                failed.append((table, str(err).strip()))
        pending = [table for table, _ in failed]
        if not pending:
            return filled
    raise AssertionError(f"could not fill {failed}")


def checksums(conn, columns=None):
    """{table: (row count, md5 of its rows)}; with ``columns`` ({table: [names]}) only those
    columns are summed (what an older version had)."""
    sums = {}
    for table in tables(conn):
        where = " WHERE NOT builtin" if table == "vision.model_store" else ""
        cols = (columns or {}).get(table) or [c for c, _, _ in _query(conn, _COLUMNS, (table,))]
        row = "(" + ", ".join(f"{c}::text" for c in cols) + ")::text"
        sums[table] = tuple(_query(conn, f"SELECT count(*), md5(coalesce(string_agg({row}, '|' "
                                         f"ORDER BY {row}), '')) FROM {table}{where}")[0])
    return sums


def columns(conn):
    return {table: [c for c, _, _ in _query(conn, _COLUMNS, (table,))] for table in tables(conn)}
