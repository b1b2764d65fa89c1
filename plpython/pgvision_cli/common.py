"""What every command of ``pgvision`` shares: the session (a connection opened on first use,
NOTICEs relayed), running SQL with clean errors, tables of results, quoting, and the group
class that lets the connection options follow a subcommand."""

import json
import sys

import click
from rich.console import Console
from rich.progress import Progress
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import pgvision

from . import connection
from .connection import FAILED, NO_CONNECTION

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


class Session:
    """What every subcommand gets: where to connect, and how much to say."""

    def __init__(self, dsn, verbose, quiet):
        self.dsn, self.verbose, self.quiet = connection.resolve(dsn), verbose, quiet
        self._conn = None

    def connect(self, autocommit=True):
        import psycopg2

        try:
            conn = connection.connect(self.dsn, autocommit)
        except (psycopg2.OperationalError, psycopg2.ProgrammingError) as err:
            # ProgrammingError: libpq refused the string itself ("invalid dsn: ...")
            reason = connection.scrub(str(err).strip(), self.dsn)
            fail(f"cannot connect to {connection.redact(self.dsn)}: {reason}", NO_CONNECTION)
        if self.verbose:
            conn.notices = NoticeRelay(self)
        return conn

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def say(self, message, style=None):
        """A line on stderr, as plain text (file names and server messages may hold [...])."""
        if not self.quiet:
            err_console.print(message, style=style, markup=False, soft_wrap=True)

    def detail(self, message):
        if self.verbose:
            err_console.print(message, style="dim", markup=False, soft_wrap=True)

    def progress(self, *columns):
        return Progress(*columns, console=err_console, disable=self.quiet, transient=False)


class NoticeRelay(list):
    """psycopg2 appends server NOTICEs to ``conn.notices``; with -v they are printed."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def append(self, notice):
        self.session.detail(notice.strip())


def fail(message, code=FAILED):
    err_console.print(Text("pgvision: ", style="bold red") + Text(message), soft_wrap=True)
    sys.exit(code)


def server_error(err):
    """A psycopg2 error as the server said it (message, detail, hint), and exit 1."""
    diag = getattr(err, "diag", None)
    text = (diag.message_primary if diag and diag.message_primary else str(err)).strip()
    text = text.removeprefix("plpy.Error: ")  # PL/Python's wrapping says nothing to a user
    for extra in (getattr(diag, "message_detail", None), getattr(diag, "message_hint", None)):
        if extra:
            text += f"\n  {extra}"
    fail(text)


def run_sql(session, sql, params=None, conn=None):
    """Rows of one statement; a server error ends the command with its message."""
    import psycopg2

    try:
        with (conn or session.conn).cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    except psycopg2.Error as err:
        server_error(err)


MODEL_OPTION = click.option("--model", "-m", default=pgvision.DEFAULT_MODEL, show_default=True)
JSON_OPTION = click.option("--json", "as_json", is_flag=True,
                           help="Print the rows as a JSON array (for scripts).")


def show(records, as_json, right=()):
    """Rows (dicts) as a table on stdout, or as one JSON array with --json."""
    if as_json:
        print(json.dumps(records, default=str))
        return
    if not records:
        return
    listing = Table()
    for column in records[0]:
        listing.add_column(column, justify="right" if column in right else "left")
    for record in records:
        listing.add_row(*[escape("" if v is None else str(v)) for v in record.values()])
    out_console.print(listing)


def ident(name):
    """A name quoted as an SQL identifier.

    >>> ident('my "odd" table')
    '"my ""odd"" table"'
    """
    return '"' + name.replace('"', '""') + '"'


def quoted_table(session, table):
    """The table's schema-qualified, quoted name as the server resolves it (or exit)."""
    rows = run_sql(session, "SELECT pg_catalog.to_regclass(%s)::text", (table,))
    if not rows or rows[0][0] is None:
        fail(f"table {table!r} does not exist (pgvision load --create makes one)")
    return rows[0][0]


def table_columns(session, table):
    return {name: kind for name, kind in run_sql(session, """
        SELECT attname, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
        WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped""", (table,))}


def image_rows(session, qualified, ids, id_column="id", image_column="image", names=True):
    """{id: {"image": bytes, "name": text}} of the given ids, read as the connecting role;
    the name from a column "name" (as `pgvision load` makes) or else "label"."""
    columns = table_columns(session, qualified)
    caption = next((c for c in ("name", "label") if c in columns), None) if names else None
    name_sql = f"{ident(caption)}::text" if caption else "NULL::text"
    rows = run_sql(session, f"SELECT {ident(id_column)}::bigint, {ident(image_column)}, "
                   f"{name_sql} FROM {qualified} WHERE {ident(id_column)} = ANY(%s)",
                   (list(ids),))
    return {r[0]: {"id": r[0], "image": bytes(r[1]) if r[1] is not None else None,
                   "name": r[2]} for r in rows}


def write_png(session, path, png):
    with open(path, "wb") as fh:
        fh.write(bytes(png))
    session.say(f"wrote {path} ({len(png) / 1e3:.0f} kB)")


DSN_HELP = "libpq connection string or URI (default: $DATABASE_URL, else the PG* variables)."
VERBOSE_HELP = "Also print server NOTICEs and every skip."
QUIET_HELP = "No progress bars or summaries; errors only."


def warn_password(dsn):
    if dsn and connection.has_password(dsn):
        err_console.print("pgvision: warning: a password in --dsn shows in the process list; "
                          "use PGPASSWORD or ~/.pgpass (or DATABASE_URL) instead",
                          markup=False, highlight=False)


def _late_option(ctx, param, value):
    """--dsn, -v and -q given after the subcommand (as psql-style tools take them): they
    apply to the session the group made (its connection opens on first use, later)."""
    if value is None or value is False:
        return
    session = ctx.find_object(Session)
    if param.name == "dsn":
        warn_password(value)
        session.dsn = connection.resolve(value)
    else:
        setattr(session, param.name, True)


def _connection_options():
    return [click.Option(["--dsn"], metavar="URI", help=DSN_HELP, expose_value=False,
                         callback=_late_option),
            click.Option(["-v", "--verbose"], is_flag=True, default=None, help=VERBOSE_HELP,
                         expose_value=False, callback=_late_option),
            click.Option(["-q", "--quiet"], is_flag=True, default=None, help=QUIET_HELP,
                         expose_value=False, callback=_late_option)]


class Group(click.Group):
    """A group whose every command also takes the connection options after its name."""

    def add_command(self, cmd, name=None):
        if not isinstance(cmd, click.Group):
            taken = {opt for param in cmd.params for opt in getattr(param, "opts", [])}
            cmd.params.extend(option for option in _connection_options()
                              if not taken & set(option.opts))
        super().add_command(cmd, name)

    def group(self, *args, **kwargs):
        kwargs.setdefault("cls", Group)
        return super().group(*args, **kwargs)
