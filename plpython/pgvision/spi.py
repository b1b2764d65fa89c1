"""The server interface every SQL wrapper goes through: the entry point that turns errors
into SQL errors, prepared plans kept per backend, and the ``pgvision.*`` settings.

Every SQL function of the extension is ``spi.call(plpy, GD, module.function, args...)``;
``plpy`` and ``GD`` are passed in, so every module imports and tests without a server.
"""

from . import __version__, runtimes
from .errors import OBJECT_IN_USE, PgvisionError
from .images import DEFAULT_MAX_PIXELS
from .slots import default_max_model_backends

_PLANS = "pgvision.plans"
_VERSION_CHECKED = "pgvision.version_checked"


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
        return fn(*args)
    except PgvisionError as err:
        extra = {"hint": err.hint} if err.hint else {}
        plpy.error(str(err), sqlstate=err.sqlstate, **extra)


def check_version(plpy):
    rows = plpy.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgvision'")
    if rows and rows[0]["extversion"] != __version__:
        raise PgvisionError(
            "pgvision", f"the database runs extension version {rows[0]['extversion']}, but the "
            f"server's pgvision Python package is {__version__}", OBJECT_IN_USE,
            hint="Upgrade the database (make migrate DSN=...) or install the matching package.")


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


def max_pixels(plpy, GD):
    """``pgvision.max_image_pixels``: the decompression-bomb guard."""
    return setting(plpy, GD, "pgvision.max_image_pixels", DEFAULT_MAX_PIXELS)


def max_model_backends(plpy, GD):
    """``pgvision.max_model_backends``: how many processes may hold a model (0: no limit)."""
    return setting(plpy, GD, "pgvision.max_model_backends", default_max_model_backends())


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
