"""Where to connect, as psql and alembic do it: ``--dsn``, else ``DATABASE_URL``, else the
``PG*`` variables and libpq's defaults. Passwords are never printed.

    >>> redact("postgresql://ann:s3cret@db.example:5433/shop?sslmode=require")
    'postgresql://ann@db.example:5433/shop'
    >>> redact("host=/tmp dbname=shop password=s3cret user=ann")
    'postgresql://ann@/tmp/shop'
"""

import os

# Exit codes, documented in `pgvision --help`.
OK, FAILED, USAGE, NO_CONNECTION, PROBLEMS, INTERRUPTED = 0, 1, 2, 3, 4, 130


def resolve(dsn):
    """The connection string to use ('' means libpq's PG* variables and defaults)."""
    return dsn or os.environ.get("DATABASE_URL") or ""


def redact(dsn):
    """user@host:port/dbname of a connection string, without password or options."""
    from psycopg2.extensions import parse_dsn

    try:
        parts = parse_dsn(dsn) if dsn else {}
    except Exception:  # unparsable: say nothing of it rather than echo it
        return "postgresql://(unparsable connection string)"
    user = parts.get("user") or os.environ.get("PGUSER", "")
    host = parts.get("host") or os.environ.get("PGHOST", "")
    port = parts.get("port") or os.environ.get("PGPORT", "")
    dbname = parts.get("dbname") or os.environ.get("PGDATABASE", "")
    where = host + (f":{port}" if port and not host.startswith("/") else "")
    return f"postgresql://{user + '@' if user else ''}{where}/{dbname}"


def secrets(dsn):
    """The password(s) a connection string holds, also where libpq cannot parse it."""
    import re
    from urllib.parse import unquote

    found = set()
    for pattern in (r"^[a-z]+://[^:/@?]*:([^@/?]*)@", r"(?:^|[\s?&])password\s*=\s*'([^']*)'",
                    r"(?:^|[\s?&])password\s*=\s*([^\s&']+)"):
        for value in re.findall(pattern, dsn or "", flags=re.IGNORECASE):
            if value:
                found.update({value, unquote(value)})
    return sorted(found, key=len, reverse=True)


def scrub(message, dsn):
    """``message`` (e.g. libpq's, which may quote a malformed connection string) with the
    connection string's password replaced by ***."""
    for secret in secrets(dsn):
        message = message.replace(secret, "***")
    return message


def has_password(dsn):
    return bool(secrets(dsn))


def connect(dsn, autocommit=True, application_name="pgvision-cli"):
    """A psycopg2 connection (autocommit unless asked) tagged with an application name."""
    import psycopg2

    conn = psycopg2.connect(dsn, application_name=application_name)
    conn.autocommit = autocommit
    return conn
