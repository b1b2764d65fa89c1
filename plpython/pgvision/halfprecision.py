"""The precision features are stored at: half (IEEE 754 binary16) wherever it holds a
vector's values, single (real[]) where it does not, and the conversion of rows written
before 0.17.0 (``vision.compact_features``).

A 2048-d vector takes 4 KB in half precision against 8 KB as real[], in the table, its WAL
and every backup. A vector of fewer than ``HALF_FROM_DIMS`` values stays single: it saves
next to nothing, and such vectors are read as values (nsfwjs' class probabilities, which
must sum to 1 and equal ``vision.moderate``'s; perceptual hashes and colour histograms). Half precision keeps ~3.3 significant digits: the cosine of two CNN
features moves by ~1e-4, which reorders only near-ties (bench/serving.py measures the
recall@10 of exact search on half-precision rows against single precision: 0.99+).
Searches compute in single precision, on the stored values made single.

>>> packed = to_half([0.5, -2.0, 1e-3])
>>> len(packed), from_half(packed).tolist()
(6, [0.5, -2.0, 0.0010004043579101562])
>>> to_half([1e6]) is None   # beyond binary16's range: stays single precision
True
>>> half_if_held([0.5] * 300) is not None, half_if_held([0.5] * 5)
(True, None)
"""

import numpy as np

from . import spi
from .errors import NULL_VALUE, PgvisionError, require_int_range, require_not_null
from .privileges import require_table_owner
from .progress import Progress

FN_COMPACT = "vision.compact_features"
FN_HALF = "vision._half"
HALF_FROM_DIMS = 256
HALF = np.dtype("<f2")
_HEADER = 20  # ndim, flags, element type, then (length, lower bound) of the one dimension
_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f4")])


def to_half(vector):
    """Little-endian binary16 bytes of a vector, or None when a finite value is beyond
    binary16's range (it would become infinite)."""
    single = np.asarray(vector, dtype=np.float32)
    with np.errstate(over="ignore"):  # an overflow is the answer "None", not a warning
        half = single.astype(HALF)
    if not np.array_equal(np.isfinite(half), np.isfinite(single)):
        return None
    return half.tobytes()


def half_if_held(vector):
    """What a stored row holds in ``half``: :func:`to_half` of a vector of at least
    ``HALF_FROM_DIMS`` values, else None (the row keeps ``feature`` real[])."""
    return to_half(vector) if len(vector) >= HALF_FROM_DIMS else None


def from_half(data):
    """binary16 bytes → float32 vector."""
    return np.frombuffer(bytes(data), dtype=HALF).astype(np.float32)


def decode_array(data, expected_dims=None):
    """real[] in array_send format → float32 vector; ValueError when not a NULL-free 1-D array."""
    data = bytes(data)
    ndim, has_nulls = int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")
    if ndim != 1 or has_nulls:
        raise ValueError("not a one-dimensional array without NULLs")
    values = np.frombuffer(data, dtype=_ELEMENT, offset=_HEADER)
    if expected_dims is not None and len(values) != expected_dims:
        raise ValueError(f"has {len(values)} dimensions, expected {expected_dims}")
    return values["value"].astype(np.float32)


# what a query selects of a stored row ``f``: one of the two is NULL
VECTOR = "f.half, pg_catalog.array_send(f.feature) AS single"


def decode_row(row, expected_dims=None):
    """A row selected with :data:`VECTOR` → float32 vector; ValueError when malformed."""
    if row["half"] is None:
        return decode_array(row["single"], expected_dims)
    data = row["half"]
    if len(data) % 2 or (expected_dims is not None and len(data) != 2 * expected_dims):
        raise ValueError(f"has {len(data)} bytes of half precision, expected "
                         f"{2 * expected_dims}" if expected_dims is not None else
                         f"has an odd number of bytes ({len(data)}) of half precision")
    return from_half(data)


def stored(vector):
    """[single, half] column values of a row: (None, bytes) in half precision where it holds
    the values, else (real[] text, None)."""
    half = half_if_held(vector)
    return [None, half] if half is not None else [array_text(vector), None]


def array_text(vector):
    """A float32 vector as Postgres array text. PL/Python converts a list to real[] element by
    element through Python strings; one formatted string parsed by float4in in C writes
    ~1.5x faster (measured on 1280-d rows). %.9g round-trips every float32 exactly."""
    values = np.asarray(vector, dtype=np.float32).tolist()
    template = _TEMPLATES.get(len(values))
    if template is None:
        template = _TEMPLATES[len(values)] = "{" + ",".join(["%.9g"] * len(values)) + "}"
    return template % tuple(values)


_TEMPLATES = {}


def half_or_none(feature):
    """``vision._half``: a real[] (a list from PL/Python) in half precision, or None."""
    if any(isinstance(value, list) for value in feature):
        raise PgvisionError(FN_HALF, 'argument "feature" is not a one-dimensional array')
    if any(value is None for value in feature):
        raise PgvisionError(FN_HALF, 'argument "feature" has NULL elements', NULL_VALUE)
    return half_if_held(feature)


def half_text(half):
    """``vision._half_text``: binary16 bytes as real[] text."""
    return array_text(from_half(half))


def held_in_half(plpy, GD, model, source, dims):
    """Whether every stored row of (model, source) is in half precision, so a snapshot of
    them may be: none of single precision (written before 0.17.0, or beyond its range),
    and a model half precision stores at all."""
    if dims < HALF_FROM_DIMS:
        return False
    return plpy.execute(spi.plan(plpy, GD, """
        SELECT NOT EXISTS (SELECT FROM vision.stored_features WHERE model = $1
                           AND source = $2 AND feature IS NOT NULL) AS held""",
        ["text", "oid"]), [model, source])[0]["held"]


# single-precision rows of models of at least $2 dimensions (HALF_FROM_DIMS: those half
# precision may hold; rows of shorter models are never read)
_SINGLE = """
    FROM vision.stored_features
    WHERE source = $1 AND feature IS NOT NULL
      AND model IN (SELECT name FROM vision.model_store WHERE dims >= $2)"""
_PENDING = """
    SELECT model, image_id, pg_catalog.array_send(feature) AS single""" + _SINGLE + """
      AND (model, image_id) > ($3, $4)
    ORDER BY model, image_id LIMIT $5"""
_CONVERT = """
    UPDATE vision.stored_features f SET half = u.half, feature = NULL
    FROM ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::int8[]),
                   pg_catalog.unnest($4::bytea[])) AS u (model, image_id, half)
    WHERE f.source = $1 AND f.model = u.model AND f.image_id = u.image_id
      AND f.feature IS NOT NULL"""


def compact_features(plpy, GD, source, batch_rows=2000):
    """Store in half precision the single-precision rows of ``source`` whose values it holds,
    ``batch_rows`` a transaction (when CALLed outside one): resumable, since a converted row
    is never read again, and searches answer throughout (a converted row is a logged change,
    searched exactly until the next snapshot). Returns (converted, single): the rows left in
    single precision (values beyond half precision's range, vectors shorter than
    ``HALF_FROM_DIMS``)."""
    fn = FN_COMPACT
    require_not_null(fn, "source", source)
    require_int_range(fn, "batch_rows", batch_rows, 1, 100_000)
    relid = spi.relid_of(plpy, source)
    with spi.pinned_search_path(plpy) as pin:
        require_table_owner(plpy, GD, fn, relid, "its stored features")
        count = spi.plan(plpy, GD, "SELECT pg_catalog.count(*) AS n" + _SINGLE, ["oid", "int4"])
        total = plpy.execute(count, [relid, HALF_FROM_DIMS])[0]["n"]
        pending = spi.plan(plpy, GD, _PENDING, ["oid", "int4", "text", "int8", "int4"])
        convert = spi.plan(plpy, GD, _CONVERT, ["oid", "text[]", "int8[]", "bytea[]"])
        committing = spi.try_commit(plpy)
        if committing:
            pin.again()
        progress = Progress(plpy.notice)
        converted = kept = 0  # kept: read, and left single (values beyond the range)
        after = ("", -(2 ** 63))
        while True:
            with spi.reading_for_everyone(GD):
                rows = plpy.execute(pending, [relid, HALF_FROM_DIMS, *after, batch_rows])
            if not rows:
                break
            after = (rows[-1]["model"], rows[-1]["image_id"])
            halves = [(r["model"], r["image_id"], half_if_held(decode_array(r["single"])))
                      for r in rows]
            halves = [h for h in halves if h[2] is not None]
            kept += len(rows) - len(halves)
            if halves:
                models, ids, packed = zip(*halves)
                spi.write(plpy, GD, convert, [relid, list(models), list(ids), list(packed)])
                converted += len(halves)
            if committing:
                plpy.commit()
                pin.again()
            progress.report(f"{fn}: {converted + kept} of {total} single-precision rows of "
                            f"{source} done ({converted} now half precision)")
        progress.finish()
        single = plpy.execute(count, [relid, 0])[0]["n"]  # every model's, short ones too
    return converted, single
