"""Keeping a table current without anyone running a job: ``vision.maintain`` brings its
features, indexes, cached neighbour lists and labels up to date in one call, and
``vision.keep_current`` schedules that call with pg_cron.

What ``maintain`` does for a table, as the role that calls it (or whose pg_cron job runs it):

- extracts features of new and changed rows for every model that was extracted for it
  before (with that extraction's id and image columns); the change-tracking triggers have
  already removed what changed or deleted rows had;
- refreshes the table's HNSW indexes that have changes pending (new and changed vectors
  added, replaced entries marked dead; a rebuild only when a fifth is out of date) — those
  the role owns;
- refreshes cached neighbour lists, with the k and metric they were made with;
- labels new and changed rows for every classifier that labelled the table before
  (``vision.classify_table`` once is what keeps a classifier's labels current);
- re-hashes the table's shared snapshot and index files whole: a damaged snapshot is
  rebuilt from vision.features at once, a damaged index file removed (the next search
  writes it again from vision.index_chunks).

Whatever it could not do (an index another role owns, say) is named in the report.
"""

import json

from . import (classify, extract, featurestore, indexes, privileges, registry, search,
               sharedfiles, snapshots, spi)
from .errors import INSUFFICIENT_PRIVILEGE, UNDEFINED_OBJECT, PgvisionError, require, require_not_null

FN_MAINTAIN = "vision.maintain"
FN_KEEP = "vision.keep_current"
FN_STOP = "vision.stop_keeping_current"
BATCH = 32


def maintain(plpy, GD, source, add_model=None):
    """Bring everything pgvision keeps about ``source`` up to date; a JSON report.
    ``add_model``: also extract that model's features (with the columns of the table's
    latest extraction), and keep them current from then on: how a table moves to a new
    default model, its old features left in place until the model is dropped."""
    fn = FN_MAINTAIN
    require_not_null(fn, "source", source)
    relid = spi.relid_of(plpy, source)  # as the caller wrote it, before pinning
    report = {"extracted": {}, "failed": {}, "indexes": {}, "neighbours": {}, "labelled": {},
              "files": {"sound": 0, "damaged": []}, "skipped": []}
    with spi.pinned_search_path(plpy) as pin:
        privileges.require_select(plpy, GD, fn, relid, "keeping its features current")
        jobs = list(plpy.execute(spi.plan(plpy, GD, """
                SELECT DISTINCT ON (model) model, id_column, image_column, job_id
                FROM vision.extract_jobs WHERE source = $1 ORDER BY model, job_id DESC""",
                ["oid"]), [relid]))
        if add_model is not None:
            jobs = _with_model(plpy, GD, fn, relid, jobs, add_model)
        for job in jobs:
            _, processed, failed, _ = extract.extract_pending(
                plpy, GD, fn, pin, relid, job["id_column"], job["image_column"], job["model"],
                BATCH, False, 1, 0)
            report["extracted"][job["model"]] = processed
            report["failed"][job["model"]] = failed
        for row in plpy.execute(spi.plan(plpy, GD, "SELECT model FROM vision.index_status "
                                         "WHERE source = $1 AND stale ORDER BY model", ["oid"]),
                                [relid]):
            _step(report, "indexes", row["model"],
                  lambda: indexes.refresh_index(plpy, GD, relid, row["model"]))
        for row in plpy.execute(spi.plan(plpy, GD, """
                SELECT DISTINCT ON (model) model, k, metric FROM vision.neighbours
                WHERE source = $1 GROUP BY model, k, metric
                ORDER BY model, pg_catalog.count(*) DESC""", ["oid"]), [relid]):
            _step(report, "neighbours", row["model"],
                  lambda: search.refresh_neighbours(plpy, GD, relid, row["model"], row["k"],
                                                    row["metric"]))
        for row in plpy.execute(spi.plan(plpy, GD, "SELECT DISTINCT classifier FROM "
                                         "vision.predictions WHERE source = $1 ORDER BY 1",
                                         ["oid"]), [relid]):
            _step(report, "labelled", row["classifier"],
                  lambda: classify.classify_table(plpy, GD, row["classifier"], relid))
        _check_files(plpy, GD, relid, report["files"])
    return json.dumps(report, sort_keys=True)


def _with_model(plpy, GD, fn, relid, jobs, model):
    """``jobs`` plus one for ``model`` on the columns of the table's latest extraction."""
    registry.lookup(plpy, GD, fn, model, argument="add_model", makes=None)
    if any(job["model"] == model for job in jobs):
        return jobs
    if not jobs:
        raise PgvisionError(fn, f'argument "add_model": {privileges.table_name(plpy, GD, relid)} '
                            "was never extracted, so its id and image columns are unknown",
                            UNDEFINED_OBJECT, hint="CALL vision.extract_table(source, model => "
                            "...) names them once.")
    latest = max(jobs, key=lambda job: job["job_id"])  # each model's latest job is in jobs
    return jobs + [{**latest, "model": model}]


_FILES = {"vec": ("snapshot", "rebuilt from vision.features"),
          "faiss": ("index", "restored from vision.index_chunks by the next search"),
          "ids": ("index's entry ids", "written again from vision.indexes by the next search")}


def _check_files(plpy, GD, relid, report):
    """Hash the table's snapshot and index files whole: damage the per-row checks of a
    search would not reach (a row no search answers, an index entry) is found here. An
    index's entry-ids file is checked where a search wrote it (a missing one is no damage)."""
    for row in plpy.execute(spi.plan(plpy, GD, """
            SELECT 'vec' AS kind, model, sha256, dims, NULL AS owner
            FROM vision.feature_snapshots WHERE source = $1
            UNION ALL
            SELECT 'faiss', model, sha256, dims, NULL FROM vision.indexes WHERE source = $1
            UNION ALL
            SELECT 'ids', model, pg_catalog.encode(pg_catalog.sha256(entry_ids), 'hex'), dims,
                   sha256 FROM vision.indexes WHERE source = $1
            ORDER BY 1, 2""", ["oid"]), [relid]):
        state = sharedfiles.check_whole(row["sha256"], row["kind"], row["owner"])
        if state == "sound":
            report["sound"] += 1
        elif state == "damaged":
            what, remedy = _FILES[row["kind"]]
            report["damaged"].append(f"{what} of model {row['model']} ({row['sha256'][:12]}…)")
            plpy.warning(f"{FN_MAINTAIN}: the {what} file of model {row['model']!r} was "
                         f"damaged; it is {remedy}")
            if row["kind"] == "vec":
                snapshots.forget_mapping(GD, row["sha256"])
                snapshots.build_snapshot(plpy, GD, FN_MAINTAIN, row["model"], relid,
                                            row["dims"], featurestore.state(
                                                plpy, GD, row["model"], relid))


def _step(report, kind, name, work):
    """Run one upkeep step; one that is refused (another role's index) is reported, and the
    others still run."""
    try:
        report[kind][name] = work()
    except PgvisionError as err:
        report["skipped"].append(str(err))


# --- scheduling with pg_cron --------------------------------------------------------------

def cron_schedule(function, seconds):
    """The cron expression that runs every ``seconds`` (whole minutes that divide an hour,
    or whole hours that divide a day, or one day)."""
    evenly = ("a number of minutes that divides an hour (1, 2, 5, 10, 15, 30 minutes), "
              "of hours that divides a day, or 1 day")
    minutes, rest = divmod(int(seconds), 60)
    require(function, "every", f"{seconds:g} seconds", rest == 0 and minutes >= 1, evenly)
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours, rest = divmod(minutes, 60)
    require(function, "every", f"{minutes} minutes", rest == 0 and (24 % hours == 0 or
                                                                   hours == 24), evenly)
    return "0 0 * * *" if hours == 24 else ("0 * * * *" if hours == 1 else f"0 */{hours} * * *")


def _job_name(plpy, GD, relid):
    return f"pgvision maintain {privileges.table_name(plpy, GD, relid)}"


def _require_pg_cron(plpy, GD, function):
    rows = plpy.execute(spi.plan(plpy, GD, """
        SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS usable,
               n.nspname::text AS schema, CURRENT_USER AS me
        FROM pg_catalog.pg_extension e
        -- pg_cron is installed in pg_catalog and keeps its jobs in a schema of its own
        JOIN pg_catalog.pg_namespace n ON n.nspname = 'cron'
        WHERE e.extname = 'pg_cron'"""))
    if not rows:
        raise PgvisionError(function, "pg_cron is not installed in this database",
                            UNDEFINED_OBJECT, hint="CREATE EXTENSION pg_cron (the server needs "
                            "shared_preload_libraries = 'pg_cron' and cron.database_name set to "
                            "this database; make start does both for the local cluster), or "
                            "run CALL vision.maintain(...) from your own scheduler.")
    if not rows[0]["usable"]:
        schema, me = rows[0]["schema"], rows[0]["me"]
        raise PgvisionError(function, f"role {me} may not schedule jobs with pg_cron: it "
                            f"lacks USAGE on schema {schema}", INSUFFICIENT_PRIVILEGE,
                            hint=f"A superuser grants it: GRANT USAGE ON SCHEMA {schema} TO "
                            f"{me}; (pg_cron then runs the job as {me}).")


def keep_current(plpy, GD, source, every="1 minute"):
    """Schedule ``CALL vision.maintain(source)`` with pg_cron, as the calling role; the job id."""
    fn = FN_KEEP
    require_not_null(fn, "source", source)
    require_not_null(fn, "every", every)
    relid, seconds = [plpy.execute(spi.plan(plpy, GD, "SELECT $1::pg_catalog.regclass::oid AS r, "
                                            "pg_catalog.date_part('epoch', $2::interval) AS s",
                                            ["text", "text"]), [source, every])[0][k]
                      for k in ("r", "s")]
    schedule = cron_schedule(fn, seconds)
    privileges.require_select(plpy, GD, fn, relid, "keeping its features current")
    _require_pg_cron(plpy, GD, fn)
    table = privileges.table_name(plpy, GD, relid)
    command = f"CALL vision.maintain({plpy.quote_literal(table)})"
    return plpy.execute(spi.plan(plpy, GD, "SELECT cron.schedule($1, $2, $3) AS job",
                                 ["text", "text", "text"]),
                        [_job_name(plpy, GD, relid), schedule, command])[0]["job"]


def stop_keeping_current(plpy, GD, source):
    """Remove this role's pg_cron job for ``source``; true if there was one."""
    fn = FN_STOP
    require_not_null(fn, "source", source)
    _require_pg_cron(plpy, GD, fn)
    relid = spi.relid_of(plpy, source)
    rows = plpy.execute(spi.plan(plpy, GD, "SELECT cron.unschedule(jobid) AS gone FROM cron.job "
                                 "WHERE jobname = $1 AND username = CURRENT_USER", ["text"]),
                        [_job_name(plpy, GD, relid)])
    return bool(rows) and all(r["gone"] for r in rows)
