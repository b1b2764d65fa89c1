"""``pgvision load`` (a folder of images into a table) and ``pgvision extract`` (their
features, in parallel workers, resumable)."""

import os
import signal
import threading
import time

import click
from rich.progress import (BarColumn, MofNCompleteColumn, TaskProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn,
                           TransferSpeedColumn)
from rich.markup import escape

from . import loading
from .common import MODEL_OPTION, fail, ident, quoted_table, run_sql, server_error, table_columns
from .connection import INTERRUPTED


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--table", "-t", required=True, help="Table to load into.")
@click.option("--create", is_flag=True, help="Create the table if it does not exist.")
@click.option("--batch-mb", default=64, show_default=True, type=click.IntRange(1, 1024),
              help="Commit after about this many MB (an interrupted load keeps what it "
              "committed; loading again skips it).")
@click.option("--follow-links", is_flag=True,
              help="Also read files that links point to outside the folders given.")
@click.option("--max-file-mb", default=loading.MAX_FILE_MB, show_default=True,
              type=click.IntRange(1, 1023), help="Skip files larger than this, unread.")
@click.option("--skip-near-duplicates", is_flag=True,
              help="Also skip re-encoded, resized or mirrored copies of an image in the table "
              "or loaded earlier in the run (perceptual hash within 7 bits).")
@click.pass_obj
def load(session, paths, table, create, batch_mb, follow_links, max_file_mb,
         skip_near_duplicates):
    """Load image files (folders, files or globs) into TABLE with binary COPY.

    Stores each file's bytes with its name, size, format and SHA-256; skips files whose bytes
    are already in the table and files that are no image, saying why. Resumable. Reads
    regular files only, and no link out of the folders given unless --follow-links.

    \b
      pgvision load ~/photos --table products --create
      pgvision load 'shots/**/*.jpg' --table products
    """
    files, unmatched = loading.expand(paths)
    for path in unmatched:
        session.say(f"nothing matches {path!r}", "yellow")
    if not files:
        fail("no files to load")
    if run_sql(session, "SELECT pg_catalog.to_regclass(%s)", (table,))[0][0] is None:
        if not create:
            fail(f"table {table!r} does not exist; add --create to make it")
        run_sql(session, loading.CREATE.format(table=".".join(ident(p) for p in table.split("."))))
        session.say(f"created table {table}")
    qualified = quoted_table(session, table)
    columns = table_columns(session, qualified)
    if columns.get("image") != "bytea":
        fail(f"table {qualified} needs a column image bytea (it has: {', '.join(columns)})")
    if "sha256" not in columns:
        session.say(f"{qualified} has no sha256 column: duplicates are not detected", "yellow")
    near = None
    if skip_near_duplicates:
        stored = run_sql(session, "SELECT image_id, feature FROM vision.features WHERE model = "
                         "'perceptual_hash' AND source = %s::regclass", (qualified,))
        if not stored and run_sql(session, f"SELECT EXISTS (SELECT FROM {qualified})")[0][0]:
            session.say(f"{qualified} has no perceptual hashes: files are compared with each "
                        "other only (CALL vision.maintain(table, add_model => "
                        "'perceptual_hash') hashes it)", "yellow")
        near = loading.NearCopies(stored)
    roots = loading.roots_of(paths)
    total = sum(os.path.getsize(f) for f in files
                if loading.refusal(f, roots, follow_links, max_file_mb << 20) is None)
    columns_shown = (TextColumn("[bold]load[/bold]"), BarColumn(), TaskProgressColumn(),
                     TextColumn("{task.fields[files]} files"), TransferSpeedColumn(),
                     TimeRemainingColumn())
    conn = session.connect(autocommit=False)
    started = time.monotonic()
    with session.progress(*columns_shown) as bar:
        task = bar.add_task("load", total=total, files=f"0/{len(files)}")
        done = [0]

        def on_file(path, size, outcome):
            done[0] += 1
            bar.update(task, advance=size, files=f"{done[0]}/{len(files)}")
            if outcome:
                session.detail(f"skipped {path}: {outcome}")

        import psycopg2
        try:
            loader = loading.Loader(conn, qualified, columns, batch_mb << 20, on_file, roots,
                                    follow_links, max_file_mb << 20, near)
            previous = signal.signal(signal.SIGINT, loader.request_stop)
            try:
                loader.load(files)
            finally:
                signal.signal(signal.SIGINT, previous)
        except KeyboardInterrupt:
            conn.cancel()
            conn.rollback()
            fail("interrupted: the batches committed so far stay; run the same command again "
                 "to load the rest", INTERRUPTED)
        except psycopg2.Error as err:
            conn.rollback()
            server_error(err)
    seconds = time.monotonic() - started
    session.say(f"{len(files)} files ({total / 1e6:.1f} MB): loaded {loader.loaded} images "
                f"({loader.loaded_bytes / 1e6:.1f} MB) into {qualified} in {seconds:.1f} s, "
                f"skipped {len(loader.skipped)}")
    reasons = {}
    for path, reason in loader.skipped:
        reasons.setdefault(reason.split(" (")[0], []).append(path)
    for reason, skipped in sorted(reasons.items()):
        shown = ", ".join(os.path.basename(p) for p in skipped[:3])
        session.say(f"  {len(skipped)} {reason}: {shown}{' ...' if len(skipped) > 3 else ''}")


@click.command()
@click.option("--table", "-t", required=True, help="Table of images.")
@MODEL_OPTION
@click.option("--workers", "-w", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Sessions extracting at once (each a share of the rows).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--retry-failed", is_flag=True, help="Try again rows that failed before.")
@click.option("--id-column", default="id", show_default=True)
@click.option("--image-column", default="image", show_default=True)
@click.pass_obj
def extract(session, table, model, workers, batch_size, retry_failed, id_column, image_column):
    """Extract features of every row of TABLE that has none yet, with a live progress bar.

    Runs CALL vision.extract_table in WORKERS sessions (each commits batch by batch). Ctrl-C
    cancels them; what was committed stays and running it again goes on from there.
    """
    qualified = quoted_table(session, table)
    first_job = run_sql(session, "SELECT coalesce(max(job_id), 0) "
                        "FROM vision.extract_progress")[0][0]
    outcomes, conns = [None] * workers, [session.connect() for _ in range(workers)]

    def work(i):
        import psycopg2
        try:
            with conns[i].cursor() as cur:
                cur.execute("CALL vision.extract_table(%s::regclass, id_column => %s, "
                            "image_column => %s, model => %s, batch_size => %s, "
                            "retry_failed => %s, parts => %s, part => %s)",
                            (qualified, id_column, image_column, model, batch_size,
                             retry_failed, workers, i))
                outcomes[i] = ("ok", cur.fetchone())
        except psycopg2.Error as err:
            outcomes[i] = ("error", err)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    def progress():
        """(jobs, rows done, rows in all, failed) of the jobs this command started."""
        return run_sql(session, """
            SELECT count(*)::int, coalesce(sum(processed + failed), 0)::bigint,
                   coalesce(sum(total), 0)::bigint, coalesce(sum(failed), 0)::bigint
            FROM vision.extract_progress
            WHERE job_id > %s AND source = %s::regclass AND model = %s""",
                       (first_job, qualified, model))[0]

    columns = (TextColumn(f"[bold]{escape(model)}[/bold]"), BarColumn(), TaskProgressColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
               TimeRemainingColumn())
    started = time.monotonic()
    try:
        with session.progress(*columns) as bar:
            task = bar.add_task("extract", total=None, rate="")
            for t in threads:
                t.start()
            def show(done, total, failed):
                rate = done / max(time.monotonic() - started, 1e-9)
                bar.update(task, total=total, completed=done,
                           rate=f"{rate:.1f} img/s" + (f", {failed} failed" if failed else ""))

            while any(t.is_alive() for t in threads):
                jobs, done, total, failed = progress()
                if jobs == workers:
                    show(done, total, failed)
                time.sleep(0.3)
            jobs, done, total, failed = progress()
            if total == 0:  # nothing was left to extract
                bar.update(task, total=1, completed=1, rate="nothing to do")
            else:  # the last batch lands after the last poll: the rate is the whole run's
                show(done, total, failed)
    except KeyboardInterrupt:
        for conn in conns:
            conn.cancel()
        for t in threads:
            t.join(30)
        done = progress()[1]
        fail(f"cancelled: {done} images of {qualified} were extracted and committed; run the "
             "same command again to go on", INTERRUPTED)
    errors = [o[1] for o in outcomes if o and o[0] == "error"]
    if errors:
        server_error(errors[0])
    processed = sum(o[1][1] or 0 for o in outcomes)
    failed = sum(o[1][2] or 0 for o in outcomes)
    seconds = time.monotonic() - started
    session.say(f"extracted {processed} images of {qualified} with {model} in {seconds:.1f} s"
                + (f"; {failed} failed (vision.extract_errors says why)" if failed else ""))
    if failed:
        for image_id, error in run_sql(session, "SELECT image_id, error FROM vision.extract_errors "
                                       "WHERE source = %s::regclass AND model = %s "
                                       "ORDER BY image_id LIMIT 5", (qualified, model)):
            session.say(f"  image {image_id}: {error}")
