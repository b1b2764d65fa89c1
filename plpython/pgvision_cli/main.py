"""``pgvision``: the command line of the pgvision extension.

Connection: --dsn, else DATABASE_URL, else libpq's PG* variables (as psql).
Exit codes: 0 done, 1 the server refused (the message says why), 2 wrong usage,
3 no connection, 4 doctor found problems, 130 interrupted (Ctrl-C; nothing half-done
is kept, and running the same command again resumes).
"""

import json
import os
import signal
import sys
import threading
import time

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn,
                           TransferSpeedColumn)
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import pgvision

from . import checks, connection, loading, pages
from .connection import FAILED, INTERRUPTED, NO_CONNECTION, OK

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


DSN_HELP = "libpq connection string or URI (default: $DATABASE_URL, else the PG* variables)."
VERBOSE_HELP = "Also print server NOTICEs and every skip."
QUIET_HELP = "No progress bars or summaries; errors only."


def _warn_password(dsn):
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
        _warn_password(value)
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


class _Group(click.Group):
    """A group whose every command also takes the connection options after its name."""

    def add_command(self, cmd, name=None):
        if not isinstance(cmd, click.Group):
            taken = {opt for param in cmd.params for opt in getattr(param, "opts", [])}
            cmd.params.extend(option for option in _connection_options()
                              if not taken & set(option.opts))
        super().add_command(cmd, name)

    def group(self, *args, **kwargs):
        kwargs.setdefault("cls", _Group)
        return super().group(*args, **kwargs)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=__doc__.split("\n\n", 1)[1])
@click.option("--dsn", metavar="URI", help=DSN_HELP)
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.version_option(pgvision.__version__, prog_name="pgvision")
@click.pass_context
def cli(ctx, dsn, verbose, quiet):
    """Load images into Postgres, extract CNN features, search, classify and map them.

    The connection options may also follow the subcommand (pgvision load DIR -t T --dsn URI)."""
    _warn_password(dsn)
    ctx.obj = Session(dsn, verbose, quiet)


# --- load ---------------------------------------------------------------------------------

@cli.command()
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
@click.pass_obj
def load(session, paths, table, create, batch_mb, follow_links, max_file_mb):
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
                                    follow_links, max_file_mb << 20)
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


# --- extract ------------------------------------------------------------------------------

@cli.command()
@click.option("--table", "-t", required=True, help="Table of images.")
@click.option("--model", "-m", default="inception_v3", show_default=True)
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
            while any(t.is_alive() for t in threads):
                jobs, done, total, failed = progress()
                if jobs == workers:
                    rate = done / max(time.monotonic() - started, 1e-9)
                    bar.update(task, total=total, completed=done,
                               rate=f"{rate:.1f} img/s" + (f", {failed} failed" if failed else ""))
                time.sleep(0.3)
            jobs, done, total, failed = progress()
            if total == 0:  # nothing was left to extract
                bar.update(task, total=1, completed=1, rate="nothing to do")
            else:
                bar.update(task, total=total, completed=done)
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


# --- similar ------------------------------------------------------------------------------

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


@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--id", "image_id", type=int, help="A stored image's id (instead of FILE).")
@click.option("--table", "-t", required=True, help="Table the images are in.")
@click.option("-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--model", "-m", default="inception_v3", show_default=True)
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True),
              help="Also write one self-contained HTML page of the results.")
@JSON_OPTION
@click.pass_obj
def similar(session, file, image_id, table, k, model, html_out, as_json):
    """The K images of TABLE most like a stored image (--id N) or an image FILE.

    \b
      pgvision similar --id 42 --table products -k 5 --html similar.html
      pgvision similar new-shoe.jpg --table products
    """
    import psycopg2

    if (file is None) == (image_id is None):
        raise click.UsageError("give either FILE or --id N")
    qualified = quoted_table(session, table)
    if file:
        with open(file, "rb") as fh:
            query = {"id": None, "image": fh.read(), "name": os.path.basename(file)}
        rows = run_sql(session, "SELECT image_id, distance, rank FROM vision.similar_to_image("
                       "%s, k => %s, model => %s, source => %s::regclass)",
                       (psycopg2.Binary(query["image"]), k, model, qualified))
    else:
        rows = run_sql(session, "SELECT image_id, distance, rank FROM vision.similar(%s, k => %s, "
                       "model => %s, source => %s::regclass)", (image_id, k, model, qualified))
    stored = image_rows(session, qualified, [r[0] for r in rows] + ([image_id] if image_id else []))
    if image_id is not None:
        query = stored.get(image_id, {"id": image_id, "image": None, "name": None})
    neighbours = [dict(stored.get(i, {"id": i, "image": None, "name": None}), distance=d, rank=r)
                  for i, d, r in rows]
    if not as_json:
        out_console.print(f"nearest to {query['name'] or 'image ' + str(image_id)} "
                          f"({model}, cosine distance)", markup=False)
    show([{"rank": n["rank"], "id": n["id"], "name": n["name"],
           "distance": max(n["distance"], 0.0) if as_json  # no -0.0000 from rounding
           else f"{max(n['distance'], 0.0):.4f}"} for n in neighbours],
         as_json, right=("rank", "id", "distance"))
    if html_out:
        title = f"pgvision: {len(neighbours)} images of {qualified} nearest to " + (
            f"image {image_id}" if image_id is not None else query["name"])
        with open(html_out, "w", encoding="utf-8") as fh:
            fh.write(pages.similar_page(title, query, neighbours))
        session.say(f"wrote {html_out}")


# --- classify -----------------------------------------------------------------------------

@cli.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--classifier", "-c", required=True, help="A trained classifier's name.")
@click.option("--table", "-t", help="With --id: the stored image's table; alone: label every "
              "row of the table into vision.predictions.")
@click.option("--id", "image_id", type=int, help="A stored image's id.")
@click.option("--top", default=3, show_default=True, type=click.IntRange(1, 100))
@JSON_OPTION
@click.pass_obj
def classify(session, files, classifier, table, image_id, top, as_json):
    """Most likely labels of image FILES, of a stored image (--id with --table), or of every
    row of a table (--table alone, stored in vision.predictions).

    \b
      pgvision classify -c product_type shoe.jpg bag.png
      pgvision classify -c product_type --table products
    """
    import psycopg2

    if image_id is not None and not table:
        raise click.UsageError("--id needs --table")
    if not files and not table:
        raise click.UsageError("give image FILES, --table T, or --id N --table T")
    records = []

    def add(image, label, p):
        records.append({"image": image, "label": label,
                        "probability": p if as_json else f"{p:.3f}"})

    if image_id is not None:
        for label, p in run_sql(session, "SELECT label, probability FROM vision.classify(%s, %s, "
                                "top_k => %s, source => %s::regclass)",
                                (image_id, classifier, top, quoted_table(session, table))):
            add(f"id {image_id}", label, p)
    elif table:
        n = run_sql(session, "SELECT vision.classify_table(%s, source => %s::regclass)",
                    (classifier, quoted_table(session, table)))[0][0]
        session.say(f"labelled {n} images of {table} with {classifier} (vision.predictions)")
    for path in files:
        with open(path, "rb") as fh:
            data = fh.read()
        for label, p in run_sql(session, "SELECT label, probability FROM vision.classify_image("
                                "%s, %s, top_k => %s)", (psycopg2.Binary(data), classifier, top)):
            add(os.path.basename(path), label, p)
    show(records, as_json, right=("probability",))


# --- map ----------------------------------------------------------------------------------

def write_png(session, path, png):
    with open(path, "wb") as fh:
        fh.write(bytes(png))
    session.say(f"wrote {path} ({len(png) / 1e3:.0f} kB)")


@cli.command(name="map")
@click.option("--table", "-t", required=True)
@click.option("--out", "-o", "out_path", default="map.png", show_default=True,
              type=click.Path(dir_okay=False, writable=True))
@click.option("--model", "-m", default="inception_v3", show_default=True)
@click.option("--color-by", default="cluster", show_default=True,
              help="'cluster', or a classifier whose predictions colour the points.")
@click.option("--clusters", default=8, show_default=True, type=click.IntRange(2, 1000),
              help="K of the K-means run first when the table has no clusters yet.")
@click.option("--thumbnails/--points", default=None,
              help="Images or coloured points [default: thumbnails up to 2,000 images].")
@click.option("--labels", default=None, help="Write beside each image: 'id', or a text "
              "column of the table.")
@click.option("--size", default=1000, show_default=True, type=click.IntRange(200, 4000))
@click.option("--layout", type=click.Choice(["grid", "scatter"]), default=None,
              help="'grid': each image in a cell of its own, neighbours kept; 'scatter': at "
              "its 2-D position [default: grid with thumbnails].")
@click.option("--refresh", is_flag=True, help="Recompute the 2-D map (and clusters).")
@click.pass_obj
def map_(session, table, out_path, model, color_by, clusters, thumbnails, labels, size, layout,
         refresh):
    """A PNG map of TABLE: images placed by similarity (t-SNE), coloured by cluster or label.

    Computes the 2-D map (vision.embed_2d) and the clusters (vision.cluster) when the table
    has none yet, then writes vision.plot_map's PNG to --out.
    """
    qualified = quoted_table(session, table)
    images = run_sql(session, "SELECT count(*) FROM vision.features WHERE source = "
                     "%s::regclass AND model = %s", (qualified, model))[0][0]
    if thumbnails is None:  # thumbnails read every image's bytes: not for a whole catalog
        thumbnails = images <= 2000
    have_map = run_sql(session, "SELECT count(*) FROM vision.map_2d WHERE source = %s::regclass "
                       "AND model = %s", (qualified, model))[0][0]
    if refresh or not have_map:
        session.say(f"t-SNE map of {qualified} ...")
        run_sql(session, "SELECT vision.embed_2d(%s, source => %s::regclass)", (model, qualified))
    if color_by == "cluster":
        if clusters > images:
            session.say(f"{qualified} has {images} images with features: {images} clusters")
            clusters = images
        have_clusters = run_sql(session, "SELECT count(*) FROM vision.clusters WHERE source = "
                                "%s::regclass AND model = %s", (qualified, model))[0][0]
        if refresh or not have_clusters:
            session.say(f"{clusters} clusters of {qualified} ...")
            run_sql(session, "SELECT vision.cluster(%s, k => %s, source => %s::regclass)",
                    (model, clusters, qualified))
    png = run_sql(session, "SELECT vision.plot_map(%s, color_by => %s, source => %s::regclass, "
                  "thumbnails => %s, labels => %s, size => %s, layout => %s)",
                  (model, color_by, qualified, thumbnails, labels, size, layout))[0][0]
    write_png(session, out_path, png)


@cli.command(name="contact-sheet")
@click.option("--table", "-t", required=True)
@click.option("--id", "image_id", type=int, help="Query image: it and its -k neighbours.")
@click.option("--ids", help="Or any ids, comma-separated (no distances).")
@click.option("-k", default=8, show_default=True, type=click.IntRange(1, 200))
@click.option("--model", "-m", default="inception_v3", show_default=True)
@click.option("--label-column", help="A text column written under each picture.")
@click.option("--out", "-o", "out_path", default="sheet.png", show_default=True,
              type=click.Path(dir_okay=False, writable=True))
@click.pass_obj
def contact_sheet(session, table, image_id, ids, k, model, label_column, out_path):
    """vision.contact_sheet's PNG: a query image beside its neighbours, or a list of ids."""
    if (image_id is None) == (ids is None):
        raise click.UsageError("give either --id N or --ids 1,2,3")
    try:
        id_list = [int(i) for i in ids.split(",")] if ids else None
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of ids: {ids!r}", param_hint="--ids")
    png = run_sql(session, "SELECT vision.contact_sheet(image_id => %s, image_ids => %s, k => %s, "
                  "source => %s::regclass, model => %s, label_column => %s)",
                  (image_id, id_list, k, quoted_table(session, table), model, label_column))[0][0]
    write_png(session, out_path, png)


# --- models -------------------------------------------------------------------------------

@cli.group()
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


# --- migrate and doctor -------------------------------------------------------------------

@cli.command()
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


@cli.command()
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
