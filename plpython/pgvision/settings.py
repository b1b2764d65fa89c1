"""The ``pgvision.*`` settings: what a session asks for (threads, runtime, search effort)
and the limits that protect the server, which a plain session can only lower.

PL/Python cannot declare a setting that only superusers may change, so a limit is read as
an admin set it (server configuration, ALTER SYSTEM, ALTER DATABASE / ROLE ... SET; read by
the SECURITY DEFINER ``vision._admin_setting``) and a session's own value (SET, PGOPTIONS)
counts only where it is lower, unless the role is a member of vision_admin.
"""

from . import runtimes
from .errors import PROGRAM_LIMIT_EXCEEDED, PgvisionError
from .images import DEFAULT_MAX_PIXELS
from .slots import default_max_model_backends
from .spi import plan


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


def runtime_setting(plpy, GD):
    """``pgvision.runtime``: auto, onnx or tensorflow."""
    return runtimes.parse_runtime(setting_text(plpy, GD, runtimes.SETTING))


def precision_setting(plpy, GD):
    """``pgvision.precision``: auto (int8 where a model has an int8 copy and the CPU has int8
    dot products) or fp32."""
    return runtimes.parse_precision(setting_text(plpy, GD, runtimes.PRECISION_SETTING))


def thread_settings(plpy, GD):
    """TensorFlow / ONNX Runtime (intra-op, inter-op) threads from the GUCs; 0 lets the
    runtime pick.

    Called before TensorFlow loads, it also turns JIT off for the session: Postgres' LLVM
    JIT and the LLVM inside TensorFlow crash a process that holds both (measured: signal 11
    on the next JIT-compiled query)."""
    plpy.execute(plan(plpy, GD, "SELECT pg_catalog.set_config('jit', 'off', false)"))
    return (setting(plpy, GD, "pgvision.intra_op_threads", 0),
            setting(plpy, GD, "pgvision.inter_op_threads", 0))
