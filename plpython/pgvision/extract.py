"""Feature extraction: one image (``vision.extract_features``) or a whole table
(``vision.extract_table``), writing ``vision.features`` incrementally, batch by batch; for
the OCR model (:mod:`pgvision.ocr`) the same batches write ``vision.image_text``.
"""

import json
import time

import numpy as np

from . import extractors, handles, halfprecision, ocr, privileges, registry, settings, spi
from .progress import Progress
from .errors import (DATATYPE_MISMATCH, INVALID_BINARY, NULL_VALUE,
                     ImageError, PgvisionError, require_choice, require_int_range,
                     require_not_null)
from .images import load_batch, model_array, preprocess

FN_EXTRACT = "vision.extract_features"
FN_TABLE = "vision.extract_table"
FN_ROWS = "vision.extract_rows"
INTEGER_TYPES = ("smallint", "integer", "bigint")
MAX_BATCH = 1024


def extract_features(plpy, GD, image, model):
    """Feature vector (list of floats) of one image's bytes."""
    return features_of(plpy, GD, FN_EXTRACT, image, registry.lookup(plpy, GD, FN_EXTRACT, model))


def features_of(plpy, GD, fn, image, row):
    """Features of image bytes under the registry ``row``; errors are reported as ``fn``'s."""
    return _features(fn, image, row, settings.max_pixels(plpy, GD),
                     lambda: extractors.get_extractor(plpy, GD, fn, row))


def _features(fn, image, row, pixels, get_extractor):
    """Decode and check the image before the (possibly first, slow) model load."""
    if image is None:
        raise PgvisionError(fn, 'argument "image" must not be NULL', NULL_VALUE)
    size = (row["input_height"], row["input_width"])
    try:
        array = model_array(image, size, row["preprocessing"], pixels)
    except ImageError as err:
        raise PgvisionError(fn, f'argument "image" is {err}', INVALID_BINARY) from None
    batch = preprocess(array[np.newaxis], row["preprocessing"])
    return get_extractor()(batch)[0].tolist()


ON_ERROR = ("error", "null")


def extract_features_with(GD, image, model_handle, on_error="error"):
    """``vision.extract_features`` without queries, so it runs in parallel workers: the model
    comes from a handle of ``vision.model_handle``. ``on_error => 'null'`` returns NULL for
    an image that does not decode instead of failing the whole query."""
    fn = handles.FN_WITH
    require_choice(fn, "on_error", on_error, ON_ERROR)
    handle = handles.parse_handle(fn, model_handle)
    try:
        return _features(fn, image, handle, handle["max_image_pixels"],
                         lambda: handles.extractor_for_handle(GD, fn, handle))
    except PgvisionError as err:
        if on_error == "null" and err.sqlstate in (INVALID_BINARY, NULL_VALUE):
            return None
        raise


def _check_arguments(fn, source, id_column, image_column, batch_size, retry_failed, parts, part,
                     max_rows=None):
    """The checks that need no query."""
    for argument, value in (("source", source), ("id_column", id_column),
                            ("image_column", image_column), ("retry_failed", retry_failed)):
        require_not_null(fn, argument, value)
    require_int_range(fn, "batch_size", batch_size, 1, MAX_BATCH)
    require_int_range(fn, "parts", parts, 1, 1024)
    require_int_range(fn, "part", part, 0, parts - 1)
    if max_rows is not None:
        require_int_range(fn, "max_rows", max_rows, 1, 1 << 31)


def validate_table(plpy, GD, fn, relid, id_column, image_column):
    """Resolve the table and check its columns; return (relid, qualified table name)."""
    relid, qualified = [plpy.execute(plpy.prepare(
        "SELECT c.oid AS relid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = $1", ["oid"]), [relid])[0][k] for k in ("relid", "name")]
    for argument, column, wanted in (("id_column", id_column, INTEGER_TYPES),
                                     ("image_column", image_column, ("bytea",))):
        found = privileges.require_column(plpy, GD, fn, argument, relid, column)
        if found not in wanted:
            raise PgvisionError(fn, f'argument "{argument}": column {column!r} of {qualified} is '
                                f"{found}, expected {' or '.join(wanted)}", DATATYPE_MISMATCH)
    return relid, qualified


def extract_table(plpy, GD, source, id_column="id", image_column="image", model=None,
                  batch_size=32, retry_failed=False, parts=1, part=0):
    _check_arguments(FN_TABLE, source, id_column, image_column, batch_size, retry_failed, parts,
                     part)
    # A procedure that commits cannot carry a SET clause: it pins its search_path itself,
    # once the table's name (which PL/Python passes as text) is resolved as the caller wrote it.
    relid = spi.relid_of(plpy, source)
    with spi.pinned_search_path(plpy) as pin:
        return extract_pending(plpy, GD, FN_TABLE, pin, relid, id_column, image_column, model,
                        batch_size, retry_failed, parts, part)[:3]


def extract_rows(plpy, GD, source, id_column="id", image_column="image", model=None,
                 batch_size=32, max_rows=1000):
    """The function form of ``vision.extract_table`` for callers that cannot CALL a procedure
    (PL/Proxy, some drivers): at most ``max_rows`` rows, all in the caller's transaction.
    Returns ``(job_id, processed, failed, remaining)``; call again while remaining > 0."""
    require_not_null(FN_ROWS, "max_rows", max_rows)
    _check_arguments(FN_ROWS, source, id_column, image_column, batch_size, False, 1, 0, max_rows)
    relid = spi.relid_of(plpy, source)
    with spi.pinned_search_path(plpy) as pin:
        job_id, processed, failed, pending = extract_pending(
            plpy, GD, FN_ROWS, pin, relid, id_column, image_column, model, batch_size, False,
            1, 0, max_rows)
    return job_id, processed, failed, pending - processed - failed


def extract_pending(plpy, GD, fn, pin, relid, id_column, image_column, model, batch_size, retry_failed,
             parts, part, max_rows=None):
    """Extract features for every row of ``source`` that has none yet for ``model``.

    Rows go in ascending id order, ``batch_size`` at a time; each batch commits on its own
    (when CALLed outside a transaction block), so a cancel loses at most the batch in flight
    and a second CALL resumes where the first stopped. A row whose bytes do not decode is
    recorded in ``vision.extract_errors`` and skipped (retried only with ``retry_failed``).
    Several sessions extracting the same table share its rows (advisory locks on the ids of
    each batch); ``parts``/``part`` still split the table by ``id % parts`` where a job
    runner (or PL/Proxy shards) wants fixed parts.
    ``max_rows`` stops after that many rows (``vision.extract_rows``, which cannot commit).
    Returns ``(job_id, processed, failed, rows pending at the start)``.
    """
    relid, qualified = validate_table(plpy, GD, fn, relid, id_column, image_column)
    privileges.require_select(plpy, GD, fn, relid, "extracting features of its images")
    row = registry.lookup(plpy, GD, fn, model, makes=None)
    return _extract_rows(plpy, GD, fn, pin, relid, qualified, row, id_column, image_column,
                         batch_size, retry_failed, parts, part, max_rows)


def batch_limit(row, memory):
    """How many images one batch may hold to stay under ``memory`` bytes: peak backend memory
    grows ~28 MB per 299x299 image in a batch (measured with Inception-v3 on ONNX Runtime,
    bench/security.py: 772 MB at 16 images, 2,096 MB at 64), and with the input's area for
    other sizes."""
    per_image = 28 * 2**20 * row["input_height"] * row["input_width"] / (299 * 299)
    return max(1, int(memory // per_image)) if memory > 0 else MAX_BATCH


def _extract_rows(plpy, GD, fn, pin, relid, qualified, row, id_column, image_column, batch_size,
                  retry_failed, parts, part, max_rows):
    model = row["name"]
    # The OCR model reads one image at a time (at most 2,000 pixels a side, see
    # pgvision.ocr.pixels), so a batch holds only bytes: the memory limit does not cut it.
    reads_text = ocr.is_ocr_row(row)
    limit = MAX_BATCH if reads_text else batch_limit(row, settings.max_batch_memory(plpy, GD))
    if batch_size > limit:
        plpy.notice(f'{fn}: argument "batch_size" {batch_size} is lowered to {limit} images, '
                    "what pgvision.max_batch_memory_mb allows for this model")
        batch_size = limit
    size = (row["input_height"], row["input_width"])
    ident, image = plpy.quote_ident(id_column), plpy.quote_ident(image_column)
    share = "" if parts == 1 else f"s.{ident} % {int(parts)} = {int(part)} AND "
    results = "vision.image_text" if reads_text else "vision.stored_features"
    pending = (f"FROM {qualified} s WHERE {share}s.{ident} IS NOT NULL AND NOT EXISTS ("
               f"SELECT 1 FROM {results} f WHERE f.model = $1 AND f.source = $2 "
               f"AND f.image_id = s.{ident})" +
               ("" if retry_failed else
                f" AND NOT EXISTS (SELECT 1 FROM vision.extract_errors e WHERE e.model = $1 "
                f"AND e.source = $2 AND e.image_id = s.{ident})"))
    # Changed, deleted and truncated images take their features along from now on.
    spi.write(plpy, GD, spi.plan(plpy, GD, "SELECT vision._track_changes($1, $2, $3)",
                                 ["oid", "name", "name"]), [relid, id_column, image_column])
    total = pending_count = plpy.execute(
        plpy.prepare(f"SELECT pg_catalog.count(*) AS n {pending}", ["text", "oid"]),
        [model, relid])[0]["n"]
    if max_rows is not None:
        total = min(total, max_rows)
    candidates = plpy.prepare(
        f"SELECT s.{ident}::bigint AS id {pending} AND s.{ident} >= $3 "
        f"ORDER BY s.{ident} LIMIT $4", ["text", "oid", "int8", "int4"])
    # Sessions extracting the same table share its rows: each claims the ids of its next batch
    # with transaction-level advisory locks, which its commit (or a rollback, on cancel or
    # crash) releases, when the rows have features; ids another session holds are its own.
    claim = plpy.prepare(
        "SELECT u.id FROM pg_catalog.unnest($1::int8[]) AS u (id) "
        "WHERE pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended("
        "$2 OPERATOR(pg_catalog.||) u.id::text, 0)) LIMIT $3", ["int8[]", "text", "int4"])
    next_batch = plpy.prepare(
        f"SELECT s.{ident}::bigint AS id, s.{image} AS image {pending} "
        f"AND s.{ident} OPERATOR(pg_catalog.=) ANY($3) ORDER BY s.{ident}",
        ["text", "oid", "int8[]"])
    lock_prefix = f"pgvision/{model}/{relid}/"
    save_result = plpy.prepare(
        "INSERT INTO vision.image_text (source, image_id, model, lines, body) "
        "VALUES ($1, $2, $3, $4::jsonb, $5) "
        "ON CONFLICT (model, source, image_id) DO UPDATE SET lines = EXCLUDED.lines, "
        "body = EXCLUDED.body, read_at = pg_catalog.now()",
        ["oid", "int8", "text", "text", "text"]) if reads_text else plpy.prepare(
        "INSERT INTO vision.stored_features (source, image_id, model, feature, half) "
        "VALUES ($1, $2, $3, $4::float4[], $5) "
        "ON CONFLICT (model, source, image_id) DO UPDATE SET feature = EXCLUDED.feature, "
        "half = EXCLUDED.half, extracted_at = pg_catalog.now()",
        ["oid", "int8", "text", "text", "bytea"])
    clear_errors = plpy.prepare(
        "DELETE FROM vision.extract_errors WHERE model = $1 AND source = $2 "
        "AND image_id OPERATOR(pg_catalog.=) ANY($3)", ["text", "oid", "int8[]"])
    save_error = plpy.prepare(
        "INSERT INTO vision.extract_errors (source, image_id, model, error) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (model, source, image_id) "
        "DO UPDATE SET error = EXCLUDED.error, failed_at = pg_catalog.now()",
        ["oid", "int8", "text", "text"])
    job_id = spi.write(plpy, GD, plpy.prepare(
        "INSERT INTO vision.extract_jobs (source, model, id_column, image_column, total, pid) "
        "VALUES ($1, $2, $3, $4, $5, pg_catalog.pg_backend_pid()) RETURNING job_id",
        ["oid", "text", "text", "text", "int8"]),
        [relid, model, id_column, image_column, total])[0]["job_id"]
    update_job = plpy.prepare(
        "UPDATE vision.extract_jobs SET processed = $2, failed = $3, "
        "updated_at = pg_catalog.clock_timestamp(), state = $4, "
        "total = CASE WHEN $4 = 'done' THEN $2 + $3 ELSE total END WHERE job_id = $1",
        ["int8", "int8", "int8", "text"])
    committing = max_rows is None and spi.try_commit(plpy)
    if committing:
        pin.again()
    if not committing and max_rows is None:
        plpy.notice(f"{fn}: called inside a transaction block, so all batches commit together "
                    "at its end; CALL it on its own to commit batch by batch")
    extractor = extractors.get_extractor(plpy, GD, fn, row) if total else None
    pixels = settings.max_pixels(plpy, GD)
    processed = failed = 0
    next_id = -(2 ** 63)
    started = time.monotonic()
    progress = Progress(plpy.notice)
    while processed + failed < total:
        want = min(batch_size, total - processed - failed)
        ids = [r["id"] for r in plpy.execute(candidates, [model, relid, next_id, 4 * want])]
        if not ids:
            break
        mine = [r["id"] for r in plpy.execute(claim, [ids, lock_prefix, want])]
        next_id = (mine[-1] if len(mine) == want else ids[-1]) + 1
        rows = plpy.execute(next_batch, [model, relid, mine]) if mine else []
        if not rows:  # another session holds (or just finished) all of them
            continue
        ids = [r["id"] for r in rows]
        if reads_text:
            lines, ok, errors = ocr.read_many(extractor, [r["image"] for r in rows], pixels)
            values = [[json.dumps(each), ocr.body(each)] for each in lines]
        else:
            batch, ok, errors = load_batch([r["image"] for r in rows], size,
                                           row["preprocessing"], pixels)
            values = [halfprecision.stored(vector) for vector in extractor(batch)]
        for position, value in zip(ok, values):
            spi.write(plpy, GD, save_result, [relid, ids[position], model] + value)
        if ok:
            spi.write(plpy, GD, clear_errors, [model, relid, [ids[p] for p in ok]])
        for position, reason in errors.items():
            spi.write(plpy, GD, save_error, [relid, ids[position], model,
                                             f"{fn}: image {ids[position]} is {reason}"])
        processed += len(ok)
        failed += len(errors)
        spi.write(plpy, GD, update_job, [job_id, processed, failed, "running"])
        if committing:
            plpy.commit()
            pin.again()
        rate = (processed + failed) / max(time.monotonic() - started, 1e-9)
        progress.report(f"{fn}: {processed + failed}/{total} rows of {qualified} "
                        f"({failed} skipped), {rate:.1f} img/s")
    progress.finish()
    spi.write(plpy, GD, update_job, [job_id, processed, failed, "done"])
    if committing:
        plpy.commit()
        pin.again()
    return job_id, processed, failed, pending_count
