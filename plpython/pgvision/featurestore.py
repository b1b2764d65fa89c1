"""Stored features as numpy matrices, cached per backend and invalidated by version.

Triggers on ``vision.features`` bump ``vision.feature_versions(model, source, version)`` on
every insert, update, delete or truncate, so a backend re-reads a feature matrix only when
it changed; checking costs one primary-key lookup.

Rows are read as ``pg_catalog.array_send(feature)`` (Postgres' binary array format) and decoded with
numpy, which is ~50x faster than converting real[] into Python lists.
"""

import numpy as np

from .errors import DATATYPE_MISMATCH, UNDEFINED_OBJECT, PgvisionError
from . import registry, spi
from .spi import plan, table_name  # noqa: F401  (other modules call featurestore.table_name)

_CACHE = "pgvision.matrices"
_HEADER = 20  # ndim, flags, element type, then (length, lower bound) of the one dimension
_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f4")])


class FeatureMatrix:
    """``ids`` (n,) int64 ascending, ``vectors`` (n, d) float32 and their L2 ``norms``."""

    def __init__(self, ids, vectors):
        self.ids = ids
        self.vectors = vectors
        self.norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.empty(0, np.float32)
        self._unit = None

    @property
    def dims(self):
        return self.vectors.shape[1]

    @property
    def unit(self):
        """Rows scaled to unit length (zero rows stay zero), computed once."""
        if self._unit is None:
            self._unit = self.vectors / np.maximum(self.norms, 1e-12)[:, None]
        return self._unit

    def positions(self, ids):
        """Row positions of ``ids`` (all must be present)."""
        return np.searchsorted(self.ids, np.asarray(ids, dtype=np.int64))


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


def version(plpy, GD, model, source):
    rows = plpy.execute(plan(plpy, GD, "SELECT version FROM vision.feature_versions "
                             "WHERE model = $1 AND source = $2", ["text", "oid"]), [model, source])
    return rows[0]["version"] if rows else 0


def resolve_source(plpy, GD, function, model, source):
    """The source table's OID: ``source`` itself, or the only table with features for model."""
    if source is not None:
        oid = plpy.execute(plan(plpy, GD, "SELECT $1::regclass::oid AS oid",
                                ["regclass"]), [source])[0]["oid"]
        spi.require_select(plpy, GD, function, oid, f"{function} over its images")
        return oid
    rows = plpy.execute(plan(plpy, GD, "SELECT source::oid AS oid, source::text AS name "
                             "FROM vision.feature_versions WHERE model = $1 ORDER BY 2",
                             ["text"]), [model])
    if len(rows) == 1:
        return rows[0]["oid"]
    if not rows:
        raise PgvisionError(function, f"model {model!r} has no stored features in any table",
                            UNDEFINED_OBJECT, hint="CALL vision.extract_table(...) first.")
    names = ", ".join(r["name"] for r in rows)
    raise PgvisionError(function, f'argument "source" is needed: model {model!r} has features '
                        f"in several tables ({names})",
                        hint=f"Name the table, e.g. source => '{rows[0]['name']}'.")


def model_and_source(plpy, GD, function, model, source):
    """The registry row of ``model`` and the OID of the source table its features are in."""
    model_row = registry.lookup(plpy, GD, function, model)
    return model_row, resolve_source(plpy, GD, function, model_row["name"], source)


def load_for(plpy, GD, function, model_row, source):
    """:func:`load` for a registry row."""
    return load(plpy, GD, function, model_row["name"], source, model_row["dims"])


def load(plpy, GD, function, model, source, dims):
    """The cached FeatureMatrix of (model, source), re-read when its version changed."""
    current = version(plpy, GD, model, source)
    cache = GD.setdefault(_CACHE, {})
    hit = cache.get((model, source))
    if hit is not None and hit[0] == current:
        return hit[1]
    cache.pop((model, source), None)
    cursor = plpy.cursor(plan(plpy, GD, "SELECT image_id, pg_catalog.array_send(feature) AS f FROM vision.features "
                              "WHERE model = $1 AND source = $2 ORDER BY image_id",
                              ["text", "oid"]), [model, source])
    ids, vectors = [], []
    while True:
        rows = cursor.fetch(2000)
        if not rows:
            break
        for row in rows:
            try:
                vectors.append(decode_array(row["f"], dims))
            except ValueError as err:
                raise PgvisionError(function, f"stored feature of image {row['image_id']} for "
                                    f"model {model!r} {err}", DATATYPE_MISMATCH) from None
            ids.append(row["image_id"])
    matrix = FeatureMatrix(np.array(ids, dtype=np.int64),
                           np.vstack(vectors) if vectors else np.empty((0, dims), np.float32))
    cache[(model, source)] = (current, matrix)
    return matrix


def fetch(plpy, GD, model, source, ids, dims):
    """Features of some images, read directly (for re-ranking a few candidates)."""
    rows = plpy.execute(plan(plpy, GD, "SELECT image_id, pg_catalog.array_send(feature) AS f FROM vision.features "
                             "WHERE model = $1 AND source = $2 AND image_id OPERATOR(pg_catalog.=) ANY($3) "
                             "ORDER BY image_id", ["text", "oid", "int8[]"]),
                        [model, source, [int(i) for i in ids]])
    return FeatureMatrix(np.array([r["image_id"] for r in rows], dtype=np.int64),
                         np.vstack([decode_array(r["f"], dims) for r in rows]) if rows
                         else np.empty((0, dims), np.float32))
