"""The server interface every SQL wrapper goes through: the entry point that turns errors
into SQL errors, prepared plans kept per backend, and the ``pgvision.*`` settings.

Every SQL function of the extension is ``spi.call(plpy, GD, module.function, args...)``;
``plpy`` and ``GD`` are passed in, so every module imports and tests without a server.
"""

from . import __version__, runtimes, serverlog, store
from .errors import (INSUFFICIENT_PRIVILEGE, OBJECT_IN_USE, PROGRAM_LIMIT_EXCEEDED,
                     UNDEFINED_OBJECT, PgvisionError)
from .images import DEFAULT_MAX_PIXELS
from .slots import default_max_model_backends

_PLANS = "pgvision.plans"
_VERSION_CHECKED = "pgvision.version_checked"
_WRITING = "pgvision.writing"
_READING = "pgvision.reading"
SEARCH_PATH = "pg_catalog, pg_temp"


def call(plpy, GD, fn, *args):
    """Run ``fn(plpy, GD, *args)`` for a SQL wrapper; a PgvisionError becomes a clean SQL error.

    The first call in a backend also checks that the server's Python package is the
    version the database's extension was created with.
    """
    def checked():
        if not GD.get(_VERSION_CHECKED):
            check_version(plpy)
            GD[_VERSION_CHECKED] = True
        return fn(plpy, GD, *args)

    return call_no_spi(plpy, checked)


def call_no_spi(plpy, fn, *args):
    """:func:`call` for functions that must not query (they run in parallel workers,
    where PL/Python cannot start the subtransaction every SPI call needs)."""
    try:
        with serverlog.relayed_warnings(plpy.notice):
            return fn(*args)
    except PgvisionError as err:
        extra = {"hint": err.hint} if err.hint else {}
        plpy.error(str(err), sqlstate=err.sqlstate, **extra)


def check_version(plpy):
    """Refuse a database whose extension is another version than this package; bind the
    store to this backend's database (a backend serves one database all its life)."""
    rows = plpy.execute("SELECT extversion, (SELECT oid FROM pg_catalog.pg_database "
                        "WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()) "
                        "AS db FROM pg_catalog.pg_extension "
                        "WHERE extname OPERATOR(pg_catalog.=) 'pgvision'::pg_catalog.name")
    if rows:
        store.bind(rows[0]["db"])
    if rows and rows[0]["extversion"] != __version__:
        raise PgvisionError(
            "pgvision", f"the database runs extension version {rows[0]['extversion']}, but the "
            f"server's pgvision Python package is {__version__}", OBJECT_IN_USE,
            hint="Upgrade the database (make migrate DSN=...) or install the matching package.")


def write(plpy, GD, plan, args=()):
    """Run a statement that writes pgvision's tables.

    Row-level security refuses writes to them (to anyone but vision_admin) except while this
    runs: ``vision._writing()``, which the policies call, reads a flag only pgvision's own
    code sets, in ``GD``, which only superuser-created plpython3u functions can reach. The
    flag is up for this one statement, which runs no user code (the tables' triggers and
    policies are pgvision's own), so a user's view or function that pgvision reads never
    writes with it."""
    GD[_WRITING] = GD.get(_WRITING, 0) + 1
    try:
        return plpy.execute(plan, list(args))
    finally:
        GD[_WRITING] -= 1


def writing(GD):
    """Whether pgvision's own code is running a write now (see :func:`write`)."""
    return GD.get(_WRITING, 0) > 0


class reading_for_everyone:
    """``with reading_for_everyone(GD):`` reads pgvision's tables whole, past the source
    table's row-level security, for what every role shares (snapshots, change logs,
    candidates of a search). The caller must filter what it answers with
    ``featurestore.visible``. As with :func:`write`, only pgvision's code sets the flag, and
    only around queries of pgvision's own tables, so no user code runs while it is up."""

    def __init__(self, GD):
        self.GD = GD

    def __enter__(self):
        self.GD[_READING] = self.GD.get(_READING, 0) + 1
        return self

    def __exit__(self, *exc):
        self.GD[_READING] -= 1
        return False


def reading(GD):
    """Whether pgvision's own code reads (or writes) for everyone now (vision._reading())."""
    return GD.get(_READING, 0) > 0 or writing(GD)


class pinned_search_path:
    """``with pinned_search_path(plpy):`` runs with ``search_path = pg_catalog, pg_temp`` and
    restores the caller's after, for the procedure that commits (a procedure with a SET
    clause cannot): each ``again()`` after a COMMIT pins it once more."""

    def __init__(self, plpy):
        self.plpy = plpy

    def __enter__(self):
        self.saved = self.plpy.execute(
            "SELECT pg_catalog.current_setting('search_path') AS p")[0]["p"]
        self.again()
        return self

    def again(self):
        self.plpy.execute(f"SELECT pg_catalog.set_config('search_path', '{SEARCH_PATH}', true)")

    def __exit__(self, *exc):
        self.plpy.execute(self.plpy.prepare(
            "SELECT pg_catalog.set_config('search_path', $1, true)", ["text"]), [self.saved])
        return False


def plan(plpy, GD, query, types=()):
    """A prepared statement kept for the life of the backend, keyed by its SQL and types (so
    two modules preparing the same query share one plan, and different queries never
    collide)."""
    plans = GD.setdefault(_PLANS, {})
    key = (query, tuple(types))
    if key not in plans:
        plans[key] = plpy.prepare(query, list(types))
    return plans[key]


# --- settings ---------------------------------------------------------------------------

def setting_text(plpy, GD, name):
    """The text of GUC ``name`` as this session sees it, or None when unset."""
    return plpy.execute(plan(plpy, GD, "SELECT pg_catalog.current_setting($1, true) AS v",
                             ["text"]), [name])[0]["v"]


def setting(plpy, GD, name, default):
    """An integer ``pgvision.*`` GUC, or ``default`` when unset."""
    return parse_setting(name, setting_text(plpy, GD, name), default)


def parse_setting(name, value, default):
    """The integer value of GUC ``name`` as read (text or NULL), or ``default`` when unset."""
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise PgvisionError("pgvision", f'setting "{name}" must be an integer, '
                            f"got {value!r}") from None


# --- limits that protect the server ----------------------------------------------------
# PL/Python cannot declare a setting that only superusers may change, so a limit is read as
# an admin set it (server configuration, ALTER SYSTEM, ALTER DATABASE / ROLE ... SET; read by
# the SECURITY DEFINER vision._admin_setting) and a session's own value (SET, PGOPTIONS)
# counts only where it is lower, unless the role is a member of vision_admin.

LIMITS = {
    "pgvision.max_image_pixels": DEFAULT_MAX_PIXELS,
    "pgvision.max_model_backends": None,  # default_max_model_backends(): the machine's memory
    "pgvision.max_batch_memory_mb": 1024,
    # rows one call may return (vision.similar_many: ids x k; ~190 bytes a row in memory)
    "pgvision.max_result_rows": 1_000_000,
    # images one picture may decode (vision.plot_map thumbnails: ~0.2 MB an image)
    "pgvision.max_picture_images": 2000,
}


def limit(plpy, GD, name):
    """The value of limit ``name`` for this session: never above the admin's unless the role
    is a vision_admin member. 0 means no limit."""
    row = plpy.execute(plan(plpy, GD, """
        SELECT pg_catalog.current_setting($1, true) AS session, vision._admin_setting($1) AS admin,
               pg_catalog.pg_has_role('vision_admin', 'MEMBER') AS is_admin""", ["text"]),
        [name])[0]
    default = LIMITS[name] if LIMITS[name] is not None else default_max_model_backends()
    return capped(name, row["session"], row["admin"], row["is_admin"], default)


def capped(name, session, admin, is_admin, default):
    """:func:`limit` from the values as read (text or NULL): the session's value where it is
    lower than the admin's (or the caller is an admin), else the admin's (0: no limit)."""
    ceiling = parse_setting(name, admin, default)
    wanted = parse_setting(name, session, ceiling)
    if is_admin or ceiling == 0:
        return wanted
    return ceiling if wanted == 0 else min(wanted, ceiling)


def require_within_limit(plpy, GD, function, what, value, name):
    """Refuse ``value`` (e.g. the rows a call would return) over limit ``name``, naming the
    limit and how an admin raises it."""
    ceiling = limit(plpy, GD, name)
    if ceiling and value > ceiling:
        raise PgvisionError(function, f"{what} = {value} is over {name} ({ceiling})",
                            PROGRAM_LIMIT_EXCEEDED,
                            hint=f"Ask for less, or have an admin raise it: ALTER DATABASE ... "
                                 f"SET {name} = N (or ALTER SYSTEM; 0 means no limit).")


def max_pixels(plpy, GD):
    """``pgvision.max_image_pixels``: the decompression-bomb guard."""
    return limit(plpy, GD, "pgvision.max_image_pixels")


def max_model_backends(plpy, GD):
    """``pgvision.max_model_backends``: how many processes may hold a model (0: no limit)."""
    return limit(plpy, GD, "pgvision.max_model_backends")


def max_batch_memory(plpy, GD):
    """``pgvision.max_batch_memory_mb``: what one extraction batch may take, in bytes."""
    return limit(plpy, GD, "pgvision.max_batch_memory_mb") << 20


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


def runtime_setting(plpy, GD):
    """``pgvision.runtime``: auto, onnx or tensorflow."""
    return runtimes.parse_runtime(setting_text(plpy, GD, runtimes.SETTING))


def thread_settings(plpy, GD):
    """TensorFlow / ONNX Runtime (intra-op, inter-op) threads from the GUCs; 0 lets the
    runtime pick.

    Called before TensorFlow loads, it also turns JIT off for the session: Postgres' LLVM
    JIT and the LLVM inside TensorFlow crash a process that holds both (measured: signal 11
    on the next JIT-compiled query)."""
    plpy.execute(plan(plpy, GD, "SELECT pg_catalog.set_config('jit', 'off', false)"))
    return (setting(plpy, GD, "pgvision.intra_op_threads", 0),
            setting(plpy, GD, "pgvision.inter_op_threads", 0))


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
