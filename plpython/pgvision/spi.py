"""The server interface every SQL wrapper goes through, the ground floor of the package: the
entry point that turns errors into SQL errors, prepared plans kept per backend, and the flags
under which pgvision's own code writes its tables or reads them for everyone.

Settings and limits live in :mod:`pgvision.settings`, privilege checks in
:mod:`pgvision.privileges`.

Every SQL function of the extension is ``spi.call(plpy, GD, module.function, args...)``;
``plpy`` and ``GD`` are passed in, so every module imports and tests without a server.
"""

from . import __version__, serverlog, sharedfiles
from .errors import OBJECT_IN_USE, PgvisionError

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
        sharedfiles.bind(rows[0]["db"])
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


def relid_of(plpy, source):
    """The OID of a table named as the caller wrote it (resolve before pinning search_path)."""
    return plpy.execute(plpy.prepare("SELECT $1::pg_catalog.oid AS relid",
                                     ["pg_catalog.regclass"]), [source])[0]["relid"]


def try_commit(plpy):
    """Commit if the CALL runs outside a transaction block; report whether it did."""
    try:
        plpy.commit()
        return True
    except plpy.SPIError:
        return False


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
