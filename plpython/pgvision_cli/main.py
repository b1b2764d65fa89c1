"""``pgvision``: the command line of the pgvision extension.

Connection: --dsn, else DATABASE_URL, else libpq's PG* variables (as psql).
Exit codes: 0 done, 1 the server refused (the message says why), 2 wrong usage,
3 no connection, 4 doctor found problems, 130 interrupted (Ctrl-C; nothing half-done
is kept, and running the same command again resumes).
"""

import sys

import click

import pgvision

from . import admin, drawing, ingest, queries
from .common import (DSN_HELP, QUIET_HELP, VERBOSE_HELP, Group, Session, err_console,
                     warn_password)
from .connection import INTERRUPTED, OK


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=__doc__.split("\n\n", 1)[1])
@click.option("--dsn", metavar="URI", help=DSN_HELP)
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.version_option(pgvision.__version__, prog_name="pgvision")
@click.pass_context
def cli(ctx, dsn, verbose, quiet):
    """Load images into Postgres, extract CNN features, search, classify and map them.

    The connection options may also follow the subcommand (pgvision load DIR -t T --dsn URI)."""
    warn_password(dsn)
    ctx.obj = Session(dsn, verbose, quiet)


for command in (ingest.load, ingest.extract, queries.similar, queries.duplicates, queries.classify,
                queries.search_text, queries.read_text, queries.moderate, drawing.map_,
                drawing.contact_sheet, admin.models, admin.migrate, admin.compact, admin.doctor):
    cli.add_command(command)


def main():
    try:
        cli.main(prog_name="pgvision", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("interrupted")
        sys.exit(INTERRUPTED)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    sys.exit(OK)


if __name__ == "__main__":
    main()
