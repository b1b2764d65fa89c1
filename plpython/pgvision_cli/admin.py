"""``pgvision models`` (list, register, drop), ``pgvision migrate`` and ``pgvision doctor``."""

import os
import sys

import click
from rich.text import Text

from . import checks, connection
from .common import Group, JSON_OPTION, fail, out_console, run_sql, show


@click.group(cls=Group)
def models():
    """List, register and drop models."""


@models.command(name="list")
@JSON_OPTION
@click.pass_obj
def models_list(session, as_json):
    """The registered models."""
    columns = ("name", "dims", "input", "preprocessing", "stored", "provenance")
    show([dict(zip(columns, row)) for row in run_sql(
        session, "SELECT name, dims, input_height || 'x' || input_width, preprocessing, "
        "stored_in, provenance FROM vision.models ORDER BY name")], as_json, right=("dims",))


@models.command(name="register")
@click.argument("name")
@click.argument("keras_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--preprocessing", default="inception", show_default=True,
              type=click.Choice(["inception", "caffe", "torch", "raw"]))
@click.option("--feature-layer", help="Layer whose output is the feature (default: the last).")
@click.option("--pooling", default="avg", show_default=True,
              type=click.Choice(["avg", "max", "none"]))
@click.option("--provenance", default="", help="Where the model comes from.")
@click.option("--replace", is_flag=True, help="Replace a model of that name.")
@click.pass_obj
def models_register(session, name, keras_file, preprocessing, feature_layer, pooling,
                    provenance, replace):
    """Register a .keras file (uploaded; loaded by the server in Keras safe mode)."""
    import psycopg2

    with open(keras_file, "rb") as fh:
        data = fh.read()
    session.say(f"registering {name} ({len(data) / 1e6:.1f} MB): the server loads, cuts and "
                "converts it ...")
    dims = run_sql(session, "SELECT vision.register_model(%s, model_bytes => %s, preprocessing => "
                   "%s, feature_layer => %s, pooling => %s, provenance => %s, replace => %s)",
                   (name, psycopg2.Binary(data), preprocessing, feature_layer, pooling,
                    provenance or f"pgvision models register {os.path.basename(keras_file)}",
                    replace))[0][0]
    session.say(f"registered {name}: {dims}-d features")


@models.command(name="drop")
@click.argument("name")
@click.option("--cascade", is_flag=True, help="Also delete the model's features.")
@click.pass_obj
def models_drop(session, name, cascade):
    """Unregister a model."""
    n = run_sql(session, "SELECT vision.drop_model(%s, cascade => %s)", (name, cascade))[0][0]
    session.say(f"dropped {name}" + (f" and {n} feature rows" if cascade else ""))


@click.command()
@click.option("--to", "target", default="head", show_default=True,
              help="Alembic revision to go to (head, a revision such as 0009, or -1).")
@click.option("--allow-data-loss", is_flag=True,
              help="Let a downgrade delete stored rows (refused without it).")
@click.pass_obj
def migrate(session, target, allow_data_loss):
    """Install or upgrade (or downgrade) pgvision in the database with its Alembic revisions.

    Keeps its revision in public.pgvision_alembic_version, apart from an application's own
    alembic_version. A database made with CREATE EXTENSION starts at its installed version:
    an upgrade never moves the extension backwards, and a downgrade that would delete
    stored rows is refused unless --allow-data-loss.
    """
    session.say(f"migrating {connection.redact(session.dsn)} to {target}")
    try:
        before, after = checks.migrate(session.dsn, target, allow_data_loss)
    except checks.MigrationError as err:
        fail(str(err))
    session.say(f"pgvision revision {before or 'none'} -> {after}")


@click.command()
@JSON_OPTION
@click.pass_obj
def doctor(session, as_json):
    """Check the server, the backend's Python and pgvision; each problem with its fix."""
    results = checks.doctor(session.conn)
    problems = sum(ok is False for _, ok, _, _ in results)
    if as_json:
        show([{"check": name.strip(), "ok": ok, "found": found, "fix": fix}
              for name, ok, found, fix in results], True)
    else:
        for name, ok, found, fix in results:
            state = {True: Text("ok     ", "green"), False: Text("PROBLEM", "red"),
                     None: Text("note   ", "yellow")}[ok]
            out_console.print(state + Text(f" {name:<20} {found}"), soft_wrap=True)
            if fix and ok is not True:
                out_console.print(Text(f"        {'':<20} ") + Text("fix:", "dim")
                                  + Text(f" {fix}"), soft_wrap=True)
    if problems:
        if not as_json:
            session.say(f"{problems} problem(s)")
        sys.exit(connection.PROBLEMS)
