"""How a coordinator reaches its shards: libpq connection strings, the PL/Proxy cluster and
postgres_fdw servers' names, what every shard exports, PL/Proxy calls that say which shards
did not answer, and coordinator table names as the caller wrote them."""

import re

from .errors import UNDEFINED_OBJECT, PgvisionError, require, require_not_null

# What every shard exports for reading on the coordinator: view name → (shard-side view,
# its columns). The shard-side views give the source table as a qualified name, since a
# regclass (an OID) means nothing on another node.
EXPORTS = {
    "features": ("features_export", "model text, source text, image_id bigint, feature real[], "
                 "extracted_at timestamptz"),
    "predictions": ("predictions_export", "classifier text, source text, image_id bigint, "
                    "label text, probability real, predicted_at timestamptz"),
}
PROXY_SERVER = "pgvision"
FDW_PREFIX = "pgvision_shard_"
MAX_SHARDS = 64
# libpq keywords that belong to a postgres_fdw user mapping rather than to its server.
USER_KEYS = ("user", "password")
_CONNINFO = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def parse_conninfo(function, argument, text):
    """``key=value`` pairs of a libpq keyword/value connection string (no URIs)."""
    require_not_null(function, argument, text)
    pairs, position = {}, 0
    while position < len(text.rstrip()):
        match = _CONNINFO.match(text, position)
        if not match:
            raise PgvisionError(function, f'argument "{argument}" is not a libpq connection '
                                f"string (key=value ...): {text!r}")
        key, value = match.group(1), match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[key] = value
        position = match.end()
    require(function, argument, text, "dbname" in pairs, "a connection string with dbname")
    return pairs


def validate_shards(function, shards):
    require_not_null(function, "shards", shards)
    count = len(shards)
    require(function, "shards", f"{count} connection strings",
            1 <= count <= MAX_SHARDS and count & (count - 1) == 0,
            f"1, 2, 4, ... or {MAX_SHARDS} connection strings (PL/Proxy needs a power of two)")
    require(function, "shards", "NULL element", None not in shards, "an array without NULLs")
    require(function, "shards", "a repeated connection string", len(set(shards)) == count,
            "distinct connection strings")
    return [parse_conninfo(function, f"shards[{i + 1}]", dsn) for i, dsn in enumerate(shards)]


def literal(plpy, value):
    return plpy.quote_literal(value)


def option_list(plpy, pairs):
    return ", ".join(f"{plpy.quote_ident(k)} {literal(plpy, v)}" for k, v in pairs.items())


CONNECTION_FAILURE = "08006"


def shard_dsns(plpy):
    rows = plpy.execute(f"SELECT srvoptions FROM pg_catalog.pg_foreign_server "
                        f"WHERE srvname = {literal(plpy, PROXY_SERVER)}")
    if not rows:
        return []
    options = dict(o.split("=", 1) for o in rows[0]["srvoptions"])
    return [options[f"p{i}"] for i in range(len(options)) if f"p{i}" in options]


def unreachable(plpy):
    """(shard number, connection string, reason) of every shard that does not answer."""
    down = []
    for number, dsn in enumerate(shard_dsns(plpy)):
        try:
            plpy.execute(plpy.prepare("SELECT vision_cluster._ping($1)", ["int4"]), [number])
        except plpy.SPIError as err:
            down.append((number, dsn, str(err).split("\n")[0]))
    return down


def fan_out(plpy, fn, sql, types, args):
    """Run a PL/Proxy query; when it fails because shards are down, say which ones."""
    try:
        return plpy.execute(plpy.prepare(sql, types), args)
    except plpy.SPIError:
        down = unreachable(plpy)
        if not down:
            raise
        names = "; ".join(f"shard {n} ({dsn}): {reason}" for n, dsn, reason in down)
        raise PgvisionError(fn, f"{len(down)} shard(s) did not answer: {names}",
                            CONNECTION_FAILURE,
                            hint="Start them and call again. Shards that answered kept their "
                            "own work (each shard's part runs in its own transaction).") from None


def qualified_table(plpy, function, name, argument="source"):
    """A coordinator table named as the caller wrote it, schema-qualified (the functions that
    resolve a text table name here cannot carry a SET search_path clause: they resolve it
    first, then pin search_path themselves)."""
    rows = plpy.execute(plpy.prepare(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)", ["pg_catalog.text"]),
        [name])
    if not rows:
        raise PgvisionError(function, f'argument "{argument}" names no table of the '
                            f"coordinator: {name!r}", UNDEFINED_OBJECT,
                            hint="SELECT vision_cluster.distribute_table(...) makes one.")
    return rows[0]["name"]
