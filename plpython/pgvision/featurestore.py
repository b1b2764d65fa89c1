"""Stored features as numpy matrices: the rows of ``vision.stored_features``, the tables they
describe, who may see which, and what changed since a snapshot.

Triggers on ``vision.stored_features`` log each changed image in ``vision.feature_changes`` with
its transaction and bump ``vision.feature_versions``, so a backend re-reads only the changes
its snapshot (:mod:`pgvision.snapshots`) does not hold, and only when the version moved
(checking costs one key lookup, folded into the call's one query, :func:`context`). A
change is in a snapshot exactly when its transaction is visible in it, so changes that
commit in any order are all caught.

Rows are read as their half-precision bytes or, for single-precision rows, as
``pg_catalog.array_send(feature)`` (Postgres' binary array format), and decoded with numpy,
which is ~50x faster than converting real[] into Python lists (:mod:`pgvision.halfprecision`).
"""

import numpy as np

from .errors import (DATATYPE_MISMATCH, INSUFFICIENT_PRIVILEGE,
                     UNDEFINED_OBJECT, PgvisionError)
from . import registry, sharedfiles, spi
from .halfprecision import VECTOR, decode_row
from .privileges import require_select, table_name
from .spi import plan

_ID_COLUMNS = "pgvision.id_columns"


class FeatureMatrix:
    """``ids`` (n,) int64 ascending, ``vectors`` (n, d) float32 and their L2 ``norms``."""

    def __init__(self, ids, vectors, norms=None):
        self.ids = ids
        self.vectors = vectors
        if norms is None:
            norms = (np.linalg.norm(vectors, axis=1) if len(vectors)
                     else np.empty(0, np.float32))
        self.norms = norms
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


def members(values, ascending):
    """Which of ``values`` are in the ascending array ``ascending``: np.isin for the small
    arrays of one search answer, without its setup cost (a sorted merge, ~10x faster)."""
    values = np.asarray(values, dtype=np.int64)
    if not len(ascending):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(ascending, values), len(ascending) - 1)
    return ascending[at] == values


def resolve_source(plpy, GD, function, model, source):
    """The source table's OID: ``source`` itself, or the only table with features for model."""
    if source is not None:
        oid = plpy.execute(plan(plpy, GD, "SELECT $1::regclass::oid AS oid",
                                ["regclass"]), [source])[0]["oid"]
        require_select(plpy, GD, function, oid, f"{function} over its images")
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


# --- row-level security of the source table ------------------------------------------------

def row_security(plpy, GD, source):
    """The id column of ``source`` when its row-level security applies to the caller (a
    policy may hide rows), else None ('' when pgvision does not know the id column)."""
    row = plpy.execute(plan(plpy, GD, "SELECT pg_catalog.row_security_active($1) AS active, "
                            "vision._id_column($1) AS id_column", ["oid"]), [source])[0]
    if not row["active"]:
        return None
    return row["id_column"] or ""


def id_column(plpy, GD, source, version):
    """The id column of ``source`` ('' when unknown), cached per version of its features:
    what names the column (a new extraction's triggers and job) comes with new features."""
    cache = GD.setdefault(_ID_COLUMNS, {})
    if cache.get(source, (None,))[0] != version:
        column = plpy.execute(plan(plpy, GD, "SELECT vision._id_column($1) AS c", ["oid"]),
                              [source])[0]["c"]
        cache[source] = (version, column or "")
    return cache[source][1]


def visible(plpy, GD, function, source, ids=None):
    """None when the caller's SELECT on ``source`` returns every row (no row-level security
    applies to them); else the ascending ids among ``ids`` (all, when None) that it returns.
    Run as the caller, so the table's own policies decide."""
    column = row_security(plpy, GD, source)
    return None if column is None else visible_in(plpy, GD, function, source, column, ids)


def visible_in(plpy, GD, function, source, column, ids=None):
    """:func:`visible` where :func:`row_security` already gave the id ``column``."""
    if column == "":
        raise PgvisionError(function, f"row-level security of table "
                            f"{table_name(plpy, GD, source)} applies, but pgvision does not "
                            "know its id column", INSUFFICIENT_PRIVILEGE,
                            hint="Extract its features with vision.extract_table first.")
    col, table = plpy.quote_ident(column), table_name(plpy, GD, source)
    select = f"SELECT {col}::pg_catalog.int8 AS id FROM {table}"
    if ids is None:
        rows = plpy.execute(plan(plpy, GD, select))
    else:
        rows = plpy.execute(plan(plpy, GD, select + f" WHERE {col} OPERATOR(pg_catalog.=) "
                                 "ANY ($1)", ["int8[]"]), [[int(i) for i in ids]])
    return np.unique(np.array([r["id"] for r in rows], dtype=np.int64))


# --- the state of stored features and the changes since a snapshot ------------------------


def from_another_server(snap):
    """SQL: whether the recorded transaction snapshot ``snap`` (a column) is ahead of this
    server's, i.e. restored from another cluster, where its transaction ids mean nothing."""
    return (f"pg_catalog.pg_snapshot_xmax({snap}) OPERATOR(pg_catalog.>) "
            "pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())")


def current_snapshot(plpy, GD):
    """This statement's transaction snapshot, as text: take it before reading what a new
    snapshot or index will hold, so nothing committed in between is lost."""
    return plpy.execute(plan(plpy, GD, "SELECT pg_catalog.pg_current_snapshot()::text "
                             "AS s"))[0]["s"]


_STATE = """
    SELECT v.version, s.generation, s.sha256, s.snap::text AS snap, s.n,
           """ + from_another_server("s.snap") + """ AS snap_foreign{index_columns}
    FROM vision.feature_versions v
    LEFT JOIN vision.feature_snapshots s USING (model, source){index_join}
    WHERE v.model = $1 AND v.source = $2"""
# what a search needs of the table's index, read with the features' state in the same query
_INDEX_COLUMNS = """, i.generation AS index_generation, i.metric AS index_metric, i.ef_search,
           i.sha256 AS index_sha, i.snap::text AS index_snap, i.dims AS index_dims,
           i.storage AS index_storage, i.pca_dims AS index_pca, i.method AS index_method,
           i.probes AS index_probes,
           pg_catalog.current_setting('pgvision.probes', true) AS probes_setting,
           """ + from_another_server("i.snap") + """ AS index_foreign,
           pg_catalog.current_setting('pgvision.ef_search', true) AS ef_setting,
           pg_catalog.row_security_active($2::pg_catalog.regclass) AS rls_active"""
_INDEX_JOIN = " LEFT JOIN vision.indexes i USING (model, source)"
_STATE_QUERIES = {False: _STATE.format(index_columns="", index_join=""),
                  True: _STATE.format(index_columns=_INDEX_COLUMNS, index_join=_INDEX_JOIN)}


def state(plpy, GD, model, source, with_index=False):
    """One query for what a call needs to know: the features' version and the current
    snapshot (and, ``with_index``, the index's generation, metric, storage, ... and whether
    the table's row-level security applies to the caller); None when (model, source) has
    no features."""
    rows = plpy.execute(plan(plpy, GD, _STATE_QUERIES[with_index], ["text", "oid"]),
                        [model, source])
    return dict(rows[0]) if rows else None


_CONTEXT = """
    SELECT m.name, m.sha256 AS model_sha256, m.model_path, m.input_height, m.input_width,
           m.preprocessing, m.feature_layer, m.pooling, m.dims,
           $2::pg_catalog.regclass::pg_catalog.oid AS source_oid,
           pg_catalog.has_table_privilege($2::pg_catalog.regclass, 'SELECT') AS may_read,
           st.*
    FROM vision.model_store m
    LEFT JOIN LATERAL (""" + _STATE_QUERIES[True] + """) st ON true
    WHERE m.name = $1"""
_REGISTRY = ("name", "model_sha256", "model_path", "input_height", "input_width", "preprocessing",
             "feature_layer", "pooling", "dims")


def context(plpy, GD, function, model, source):
    """(registry row, source OID, :func:`state` with the index's) of a search: one query
    when the table is named, as an application's calls do; ``rls_active`` in the state says
    whether the table's row-level security applies to the caller."""
    if model is None or source is None:
        model_row, source = model_and_source(plpy, GD, function, model, source)
        return model_row, source, state(plpy, GD, model_row["name"], source, with_index=True)
    rows = plpy.execute(plan(plpy, GD, _CONTEXT, ["text", "regclass"]), [model, source])
    if not rows:
        registry.lookup(plpy, GD, function, model)  # raises the error that names the model
    row = rows[0]
    if not row["may_read"]:
        require_select(plpy, GD, function, row["source_oid"], f"{function} over its images")
    model_row = registry.require_kind(
        function, {key.replace("model_sha256", "sha256"): row[key] for key in _REGISTRY},
        "features")
    current = None if row["version"] is None else {
        key: value for key, value in row.items() if key not in _REGISTRY}
    return model_row, row["source_oid"], current


def collect_garbage(plpy, GD, grace_seconds=sharedfiles.GRACE_SECONDS):
    """Remove store files that no snapshot or index of this database names any more, and
    the folders of dropped databases."""
    named = {r["sha256"] for r in plpy.execute(plan(plpy, GD,
             "SELECT sha256 FROM vision._store_files()"))}
    databases = [r["oid"] for r in plpy.execute(plan(plpy, GD,
                 "SELECT oid FROM pg_catalog.pg_database"))]
    sharedfiles.collect_dropped_databases(databases, grace_seconds)
    return sharedfiles.collect_garbage(named, grace_seconds)


def forget_changes(plpy, GD, model, source):
    """Drop logged changes that every recorded snapshot of (model, source) already holds
    (the feature snapshot's and its index's)."""
    spi.write(plpy, GD, plan(plpy, GD, """
        DELETE FROM vision.feature_changes c
        USING vision.feature_snapshots s
        WHERE c.model = $1 AND c.source = $2 AND s.model = $1 AND s.source = $2
          AND pg_catalog.pg_visible_in_snapshot(c.xid, s.snap)
          AND NOT EXISTS (SELECT FROM vision.indexes i
                          WHERE i.model = $1 AND i.source = $2
                            AND NOT pg_catalog.pg_visible_in_snapshot(c.xid, i.snap))""",
        ["text", "oid"]), [model, source])


_SINCE = """
    FROM vision.feature_changes
    WHERE model = $1 AND source = $2
      AND xid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmin($3::pg_catalog.pg_snapshot)
      AND NOT pg_catalog.pg_visible_in_snapshot(xid, $3::pg_catalog.pg_snapshot)"""


def count_changes(plpy, GD, model, source, snap):
    """How many changes (an upper bound on the images) snapshot ``snap`` does not hold."""
    with spi.reading_for_everyone(GD):
        return plpy.execute(plan(plpy, GD, "SELECT pg_catalog.count(*) AS n" + _SINCE,
                                 ["text", "oid", "text"]), [model, source, snap])[0]["n"]


def changes_since(plpy, GD, function, model, source, dims, snap):
    """(ids changed since snapshot ``snap``, FeatureMatrix of the current vectors of those
    that still exist). A change is in the snapshot exactly when its transaction is visible
    in it, so changes committed in any order are all caught."""
    # Each change looks its row up by the whole key (LATERAL ... LIMIT 1 keeps the lookup
    # per change): planned as a join, with statistics from before a bulk change, a nested
    # loop scanned every row of the table for each change (14 s a search at 2,000 changes).
    with spi.reading_for_everyone(GD):
        rows = plpy.execute(plan(plpy, GD, """
            SELECT c.image_id, """ + VECTOR + """
            FROM (SELECT DISTINCT image_id""" + _SINCE + """) c
            LEFT JOIN LATERAL (
              SELECT s.half, s.feature FROM vision.stored_features s
              WHERE s.model = $1 AND s.source = $2
                AND s.image_id OPERATOR(pg_catalog.=) c.image_id LIMIT 1) f ON true
            ORDER BY c.image_id""", ["text", "oid", "text"]), [model, source, snap])
    changed = np.array([r["image_id"] for r in rows], dtype=np.int64)
    present = [r for r in rows if r["half"] is not None or r["single"] is not None]
    return changed, FeatureMatrix(
        np.array([r["image_id"] for r in present], dtype=np.int64),
        np.vstack([_decode(function, model, r, dims) for r in present]) if present
        else np.empty((0, dims), np.float32))


def _decode(function, model, row, dims):
    try:
        return decode_row(row, dims)
    except ValueError as err:
        raise PgvisionError(function, f"stored feature of image {row['image_id']} for "
                            f"model {model!r} {err}", DATATYPE_MISMATCH) from None


def table_blocks(plpy, GD, function, model, source, dims, block=2000):
    with spi.reading_for_everyone(GD):
        cursor = plpy.cursor(plan(plpy, GD, f"SELECT f.image_id, {VECTOR} FROM "
                                  "vision.stored_features f WHERE f.model = $1 AND f.source = $2 "
                                  "ORDER BY f.image_id", ["text", "oid"]), [model, source])
    while True:
        with spi.reading_for_everyone(GD):
            rows = cursor.fetch(block)
        if not rows:
            return
        yield (np.array([r["image_id"] for r in rows], dtype=np.int64),
               np.vstack([_decode(function, model, r, dims) for r in rows]))


def read_matrix(plpy, GD, function, model, source, dims):
    ids, vectors = [], []
    for block_ids, block in table_blocks(plpy, GD, function, model, source, dims):
        ids.append(block_ids)
        vectors.append(block)
    return FeatureMatrix(np.concatenate(ids) if ids else np.empty(0, np.int64),
                         np.vstack(vectors) if vectors else np.empty((0, dims), np.float32))


def fetch(plpy, GD, model, source, ids, dims):
    """Features of some images as the caller may read them (the source table's row-level
    security applies through vision.stored_features's policy)."""
    rows = plpy.execute(plan(plpy, GD, f"SELECT f.image_id, {VECTOR} FROM vision.stored_features f "
                             "WHERE f.model = $1 AND f.source = $2 "
                             "AND f.image_id OPERATOR(pg_catalog.=) ANY($3) ORDER BY f.image_id",
                             ["text", "oid", "int8[]"]), [model, source, [int(i) for i in ids]])
    return FeatureMatrix(np.array([r["image_id"] for r in rows], dtype=np.int64),
                         np.vstack([decode_row(r, dims) for r in rows]) if rows
                         else np.empty((0, dims), np.float32))
