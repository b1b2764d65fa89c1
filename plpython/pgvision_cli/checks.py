"""``pgvision migrate`` (Alembic, run in-process) and ``pgvision doctor`` (what a server
needs for pgvision, each problem with its fix)."""

import json
import os
import sys

from . import connection

VERSION_TABLE = "pgvision_alembic_version"


class MigrationError(Exception):
    pass


def migrations_dir():
    """The Alembic scripts: $PGVISION_MIGRATIONS, what `make install` put beside the venv,
    or this checkout's migrations/."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.environ.get("PGVISION_MIGRATIONS"),
                      os.path.join(sys.prefix, "share", "pgvision", "migrations"),
                      os.path.join(here, "..", "..", "migrations")):
        if candidate and os.path.isfile(os.path.join(candidate, "env.py")):
            return os.path.abspath(candidate)
    raise MigrationError("cannot find pgvision's migrations (set PGVISION_MIGRATIONS to the "
                         "migrations/ folder of a pgvision checkout)")


def current_revision(dsn):
    """pgvision's Alembic revision in the database; where it has none yet but the extension
    is there (created by hand, or migrated by 0.9.0 or older), "extension <version>"."""
    with connection.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.to_regclass(%s), (SELECT extversion FROM "
                    "pg_catalog.pg_extension WHERE extname = 'pgvision')",
                    (f"public.{VERSION_TABLE}",))
        table, extversion = cur.fetchone()
        row = None
        if table is not None:
            cur.execute(f"SELECT version_num FROM public.{VERSION_TABLE}")
            row = cur.fetchone()
    conn.close()
    if row:
        return row[0]
    return f"(extension {extversion})" if extversion else None


def migrate(dsn, target="head", allow_data_loss=False):
    """Run ``alembic upgrade target`` (or downgrade when target is below the current
    revision or negative); returns (revision before, revision after).

    A database whose extension has no revision yet starts at the revision of its installed
    version (migrations/env.py adopts it): an upgrade never moves it backwards. A downgrade
    that would delete stored rows is refused unless ``allow_data_loss``."""
    import psycopg2
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    location = migrations_dir()
    if location not in sys.path:  # revisions import extension.py beside them, as env.py does
        sys.path.insert(0, location)
    config = Config(os.path.join(location, "alembic.ini"))
    config.set_main_option("script_location", location)
    try:
        before = current_revision(dsn)
    except (psycopg2.OperationalError, psycopg2.ProgrammingError) as err:
        raise MigrationError(f"cannot connect: {connection.scrub(str(err).strip(), dsn)}") \
            from None
    saved = {name: os.environ.get(name) for name in ("PGVISION_DSN", "PGVISION_ALLOW_DATA_LOSS")}
    os.environ["PGVISION_DSN"] = dsn  # env.py reads it; never on a command line or in output
    os.environ["PGVISION_ALLOW_DATA_LOSS"] = "1" if allow_data_loss else "0"
    try:
        script = ScriptDirectory.from_config(config)
        walked = list(script.walk_revisions("base", "heads"))
        revisions = [r.revision for r in walked]
        start = before
        if before not in revisions:  # "(extension X)": env.py adopts X's revision
            start = next((r.revision for r in walked if before == "(extension "
                          f"{getattr(r.module, 'VERSION', None)})"), before)
        down = target.startswith("-") or (
            start in revisions and target in revisions
            and revisions.index(target) > revisions.index(start))
        (command.downgrade if down else command.upgrade)(config, target)
    except (CommandError, psycopg2.Error) as err:
        raise MigrationError(str(err).strip()) from None
    except Exception as err:  # SQLAlchemy wraps the server's error
        raise MigrationError(str(getattr(err, "orig", err)).strip()) from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return before, current_revision(dsn)


# --- doctor -------------------------------------------------------------------------------

RESTART = ("add PYTHONPATH='<venv>/lib/python3.11/site-packages' to the server's environment "
           "(Debian: /etc/postgresql/15/main/environment) and restart it "
           "(pg_ctlcluster 15 main restart)")


def _one(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def doctor(conn):
    """Rows (check, ok: True / False / None for a note, what was found, the fix)."""
    import psycopg2

    rows = []
    version_num, version = _one(conn, "SELECT current_setting('server_version_num')::int, "
                                "current_setting('server_version')")
    rows.append(("server", version_num >= 150000, f"PostgreSQL {version}",
                 None if version_num >= 150000 else "pgvision needs PostgreSQL 15 or later"))
    plpython = _one(conn, "SELECT default_version FROM pg_available_extensions "
                    "WHERE name = 'plpython3u'")
    rows.append(("plpython3u", plpython is not None,
                 f"available ({plpython[0]})" if plpython else "not available",
                 None if plpython else "apt-get install postgresql-plpython3-15"))
    ext = _one(conn, "SELECT installed_version, default_version FROM pg_available_extensions "
               "WHERE name = 'pgvision'")
    if ext is None:
        rows.append(("pgvision extension", False, "not installed on the server",
                     "make install (on the database server)"))
        return rows
    installed, available = ext
    rows.append(("pgvision extension", installed == available,
                 f"{installed or 'not created'} in this database, {available} on the server",
                 None if installed == available else "pgvision migrate"))
    if not installed:
        return rows
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT vision.environment()")
            env = cur.fetchone()[0]
    except psycopg2.Error as err:
        rows.append(("backend Python", False, str(err).strip().splitlines()[0], RESTART))
        return rows
    env = env if isinstance(env, dict) else json.loads(env)
    rows.append(("backend Python", True, f"Python {env['python']}, pgvision {env['pgvision']} "
                 f"from {env['pgvision_path']}", None))
    rows.append(("pgvision package", env["pgvision"] == installed,
                 f"package {env['pgvision']}, extension {installed}",
                 None if env["pgvision"] == installed else
                 "pgvision migrate (or install the package of the extension's version)"))
    required_first = sorted(env["package_roles"].items(),
                            key=lambda kv: (kv[1] != "required", kv[0]))
    for name, role in required_first:
        found = env["packages"].get(name)
        required = role == "required"
        rows.append((f"  {name}", True if found else (False if required else None),
                     found or "absent", None if found else
                     f"pip install {name} into {env['prefix']}" if required
                     else f"needed only for {role}"))
    models = _one(conn, "SELECT count(*), string_agg(name, ', ' ORDER BY name) FROM vision.models")
    rows.append(("models", models[0] > 0, f"{models[0]}: {models[1] or '-'}",
                 None if models[0] else "make install (installs the offline models)"))
    onnx = [f for f in env["model_files"] if f.endswith(".onnx")]
    rows.append(("runtimes", True, f"pgvision.runtime = {env['runtime']}; {len(onnx)} ONNX "
                 f"model(s) in {env['model_dir']}", None))
    jit = _one(conn, "SELECT current_setting('jit')")[0]
    rows.append(("jit", jit == "off", f"jit = {jit}", None if jit == "off" else
                 "ALTER DATABASE <db> SET jit = off (JIT and TensorFlow crash a backend "
                 "holding both)"))
    memory = _one(conn, "SELECT current_setting('shared_buffers'), current_setting('work_mem'), "
                  "current_setting('max_connections')")
    limits = env["limits"]
    rows.append(("memory", None, f"shared_buffers {memory[0]}, work_mem {memory[1]}, "
                 f"max_connections {memory[2]}; max_model_backends "
                 f"{limits.get('pgvision.max_model_backends')}, max_batch_memory_mb "
                 f"{limits.get('pgvision.max_batch_memory_mb')}",
                 "each backend holding a model uses 0.2-0.5 GB: keep max_model_backends x "
                 "that within the machine's memory"))
    preload = _one(conn, "SELECT current_setting('shared_preload_libraries')")[0]
    cron = _one(conn, "SELECT installed_version FROM pg_available_extensions "
                "WHERE name = 'pg_cron'")
    cron_ok = "pg_cron" in preload and cron is not None and cron[0] is not None
    rows.append(("pg_cron", True if cron_ok else None,
                 "loaded and created" if cron_ok else
                 f"{'in' if 'pg_cron' in preload else 'not in'} shared_preload_libraries, "
                 f"{'created' if cron and cron[0] else 'not created'} here",
                 None if cron_ok else "only vision.keep_current needs it: "
                 "shared_preload_libraries = 'pg_cron', cron.database_name = '<db>', "
                 "restart, CREATE EXTENSION pg_cron"))
    return rows
