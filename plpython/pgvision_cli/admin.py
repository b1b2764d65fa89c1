"""``pgvision models`` (list, register, compare, drop), ``pgvision migrate``, ``pgvision
compact`` and ``pgvision doctor``."""

import os
import sys

import click
from rich.text import Text

from pgvision.halfprecision import HALF_FROM_DIMS
from pgvision.images import PREPROCESSING
from pgvision.pooling import POOLING

from . import checks, connection
from .common import Group, JSON_OPTION, fail, out_console, run_sql, show


@click.group(cls=Group)
def models():
    """List, register, compare and drop models."""


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
              type=click.Choice(PREPROCESSING))
@click.option("--feature-layer", help="Layer whose output is the feature (default: the last).")
@click.option("--pooling", default="avg", show_default=True, type=click.Choice(POOLING),
              help="grid: average + 2x2 quadrants (5x the channels); gem: generalised mean.")
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


@models.command(name="compare")
@click.argument("labels")
@click.argument("table")
@click.option("--model", "model_names", multiple=True,
              help="A model to measure (repeat; default: every registered model).")
@click.option("--id-column", default="id", show_default=True)
@click.option("--image-column", default="image", show_default=True)
@click.option("--group-column", help="Column of LABELS naming each image's original: adds "
              "near-duplicate recall@2.")
@click.option("--max-images", default=2000, show_default=True, type=int)
@JSON_OPTION
@click.pass_obj
def models_compare(session, labels, table, model_names, id_column, image_column, group_column,
                   max_images, as_json):
    """Measure models on your own labelled images (vision.evaluate_features): kNN
    precision@10, mAP@10, linear-probe accuracy, near-duplicate recall, time per image."""
    import json

    options = {"group_column": group_column} if group_column else {}
    columns = ("model", "dims", "images", "precision@10", "mAP@10", "accuracy",
               "near-dup recall@2", "ms/image")
    rows = run_sql(session, "SELECT model, dims, images, precision_at_10, map_at_10, accuracy, "
                   "near_duplicate_recall_at_2, ms_per_image FROM vision.evaluate_features("
                   "%s, %s, %s, %s, %s, %s, %s) ORDER BY precision_at_10 DESC, model",
                   (labels, table, list(model_names) or None, id_column, image_column,
                    json.dumps(options), max_images))
    show([{c: (round(v, 3) if isinstance(v, float) else v) for c, v in zip(columns, row)}
          for row in rows], as_json, right=columns[1:])


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
    waiting = single_precision_tables(session)
    if waiting:
        rows = sum(n for _, n in waiting)
        session.say(f"{rows} feature rows of {len(waiting)} table(s) are stored as before "
                    "0.17.0, in single precision: `pgvision compact` halves their disk "
                    "(resumable, searches answer throughout)")


def single_precision_tables(session):
    """[(table, rows)] of tables whose features half precision could hold but do not yet
    (rows written before 0.17.0); [] before 0.17.0."""
    if not run_sql(session, "SELECT to_regclass('vision.stored_features') IS NOT NULL")[0][0]:
        return []
    return run_sql(session, """
        SELECT f.source::text, count(*) FROM vision.stored_features f
        JOIN vision.model_store m ON m.name = f.model AND m.dims >= %s
        WHERE f.feature IS NOT NULL GROUP BY 1 ORDER BY 1""", (HALF_FROM_DIMS,))


@click.command()
@click.option("--table", "-t", "tables", multiple=True,
              help="A table to convert (repeatable; default: every table that needs it).")
@click.option("--batch-rows", default=2000, show_default=True, type=int,
              help="Rows converted per transaction.")
@click.pass_obj
def compact(session, tables, batch_rows):
    """Store features written before 0.17.0 in half precision: half their disk.

    Runs CALL vision.compact_features for each table (its owner, or vision_admin, may), each
    batch its own transaction: interrupted, run it again and it goes on where it stopped.
    Searches answer throughout.
    """
    names = list(tables) or [name for name, _ in single_precision_tables(session)]
    if not names:
        session.say("every feature row that half precision can hold is stored in it")
        return
    for name in names:
        converted, single = run_sql(session, "CALL vision.compact_features(%s::regclass, "
                                    "batch_rows => %s)", (name, batch_rows))[0]
        session.say(f"{name}: {converted} rows now in half precision"
                    + (f", {single} stay single precision (short vectors or values beyond "
                       "half precision's range)" if single else ""))


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
