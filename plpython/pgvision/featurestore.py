"""Stored features as numpy matrices that every backend of a server shares.

The first backend to need the features of (model, source) writes a snapshot file (see
``pgvision.store``) and records it, with the transaction snapshot it read under, in
``vision.feature_snapshots``; every backend maps that file read-only. Triggers on
``vision.features`` log each changed image in ``vision.feature_changes`` with its transaction
and bump ``vision.feature_versions``, so a backend re-reads only the changes its snapshot
does not hold, and only when the version moved (checking costs one key lookup, folded into
the call's one state query). A change is in a snapshot exactly when its transaction is
visible in it, so changes that commit in any order are all caught.

Rows are read as ``pg_catalog.array_send(feature)`` (Postgres' binary array format) and
decoded with numpy, which is ~50x faster than converting real[] into Python lists.
"""

import numpy as np

from .errors import (DATA_CORRUPTED, DATATYPE_MISMATCH, INSUFFICIENT_PRIVILEGE,
                     UNDEFINED_OBJECT, PgvisionError)
from . import registry, spi, store
from .privileges import require_select, table_name
from .spi import plan

_CACHE = "pgvision.matrices"
_HEADER = 20  # ndim, flags, element type, then (length, lower bound) of the one dimension
_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f4")])


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


def load_for(plpy, GD, function, model_row, source):
    """:func:`load` for a registry row."""
    return load(plpy, GD, function, model_row["name"], source, model_row["dims"])


def load(plpy, GD, function, model, source, dims):
    """The current FeatureMatrix of (model, source) as the caller may see it: the shared
    snapshot with the changes since it applied (see :func:`live`), less the rows the source
    table's row-level security hides from the caller."""
    matrix = verified(plpy, GD, function,
                      lambda: live(plpy, GD, function, model, source, dims).matrix())
    seen = visible(plpy, GD, function, source)
    if seen is None:
        return matrix
    keep = np.isin(matrix.ids, seen)
    return FeatureMatrix(matrix.ids[keep], matrix.vectors[keep], matrix.norms[keep])


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
    cache = GD.setdefault(_CACHE + ".id_column", {})
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


# --- live view: a shared snapshot plus the changes since ----------------------------------

# The changes since a snapshot are held by every backend that searches (privately): past
# MERGE_ROWS and MERGE_FRACTION of the snapshot they are merged into a new one; past
# REREAD_FACTOR times that (a bulk load) the new one is read from the table instead of the
# changes being read into memory first.
MERGE_ROWS = 2000
MERGE_FRACTION = 0.01
REREAD_FACTOR = 4


class Live:
    """What a backend holds of (model, source): the shared snapshot (a mapped store.Snapshot,
    or a _PrivateSnapshot where none could be recorded) and the changes since it was taken,
    read from the table.

    ``changed`` (ascending) are the ids changed, added or deleted since the snapshot;
    ``delta`` the current vectors of those that still exist. A snapshot row whose id is in
    ``changed`` is out of date and never answered from.
    """

    def __init__(self, state, snapshot, changed, delta):
        self.state = state
        self.snapshot = snapshot
        self.changed = changed
        self.delta = delta
        stale = np.isin(snapshot.ids, changed) if len(changed) else None
        self.alive = None if stale is None or not stale.any() else ~stale
        self._matrix = None

    def verify(self, ids=None):
        """Raise DamagedSnapshot when a row of the mapped snapshot that ``ids`` (every row,
        when None) would be answered from no longer matches its checksum."""
        base = self.snapshot
        if not hasattr(base, "damaged"):
            return  # a private snapshot, read from the table by this backend
        positions = None if ids is None else self._snapshot_rows(ids)[1]
        bad = base.damaged(positions)
        if len(bad):
            raise DamagedSnapshot(base.sha256, base.ids[bad])

    def matrix(self):
        """All current features as one FeatureMatrix: the mapped pages themselves when
        nothing changed since the snapshot, else a merged private copy (made once). Every
        snapshot row is checked against its checksum (once per mapping)."""
        self.verify()
        if self._matrix is None:
            base = self.snapshot
            if self.alive is None and not len(self.delta.ids):
                self._matrix = FeatureMatrix(base.ids, base.vectors, base.norms)
            else:
                keep = np.arange(len(base.ids)) if self.alive is None else np.flatnonzero(self.alive)
                ids = np.concatenate([base.ids[keep], self.delta.ids])
                order = np.argsort(ids, kind="stable")
                vectors = np.concatenate([base.vectors[keep], self.delta.vectors])[order]
                self._matrix = FeatureMatrix(ids[order], vectors)
        return self._matrix

    def _snapshot_rows(self, ids):
        """(ids, positions) of those of ``ids`` answered from the snapshot: present in it and
        not changed since."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.changed):
            ids = ids[~members(ids, self.changed)]
        base_ids = self.snapshot.ids
        positions = np.searchsorted(base_ids, ids)
        found = positions < len(base_ids)
        found[found] = base_ids[positions[found]] == ids[found]
        return ids[found], positions[found]

    def vectors_of(self, ids):
        """FeatureMatrix of the current vectors of ``ids`` (those that exist), no SQL."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        base = self.snapshot
        present, positions = self._snapshot_rows(ids)
        if not len(self.changed):
            return FeatureMatrix(present, base.vectors[positions], base.norms[positions])
        from_delta = ids[np.isin(ids, self.delta.ids)]
        rows = np.concatenate([present, from_delta])
        at = self.delta.positions(from_delta)
        order = np.argsort(rows)
        return FeatureMatrix(rows[order],
                             np.concatenate([base.vectors[positions], self.delta.vectors[at]])[order],
                             np.concatenate([base.norms[positions], self.delta.norms[at]])[order])


class DamagedSnapshot(Exception):
    """A mapped snapshot row no longer matches its checksum: the file was damaged."""

    def __init__(self, sha256, image_ids):
        super().__init__(f"snapshot {sha256} damaged at image(s) {list(image_ids[:5])}")
        self.sha256 = sha256
        self.image_ids = [int(i) for i in image_ids]


def discard(plpy, GD, function, damage):
    """Forget a damaged snapshot: WARNING, remove its file, drop this backend's views of it
    (the next call maps or builds a sound one; the table is the truth)."""
    plpy.warning(f"{function}: the shared snapshot file {damage.sha256[:12]}… is damaged (the "
                 f"row of image {damage.image_ids[0]} does not match its checksum); it is "
                 "rebuilt from vision.features")
    store.remove(damage.sha256, "vec")
    forget_mapping(GD, damage.sha256)


def forget_mapping(GD, sha256):
    """Drop this backend's views of the snapshot file ``sha256``."""
    cache = GD.setdefault(_CACHE, {})
    for key in [key for key, view in cache.items()
                if getattr(view.snapshot, "sha256", None) == sha256]:
        del cache[key]


def verified(plpy, GD, function, work):
    """``work()``, done again once after :func:`discard` when it met a damaged snapshot."""
    try:
        return work()
    except DamagedSnapshot as damage:
        discard(plpy, GD, function, damage)
    try:
        return work()
    except DamagedSnapshot as damage:
        raise PgvisionError(function, f"the shared snapshot {damage.sha256[:12]}… is still "
                            f"damaged after a rebuild (image {damage.image_ids[0]})",
                            DATA_CORRUPTED, hint="Check the disk under the data directory's "
                            "pgvision/store folder.") from None


class _PrivateSnapshot:
    """A snapshot held in this backend only (read-only transactions cannot record one)."""

    def __init__(self, matrix):
        self.ids, self.vectors, self.norms = matrix.ids, matrix.vectors, matrix.norms


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
           """ + from_another_server("s.snap") + """ AS snap_foreign{extra}
    FROM vision.feature_versions v
    LEFT JOIN vision.feature_snapshots s USING (model, source){join}
    WHERE v.model = $1 AND v.source = $2"""


def state_query(extra="", join=""):
    """The SQL of :func:`state` (``$1`` model, ``$2`` source), for callers that fold it into
    a query of their own."""
    return _STATE.format(extra=extra, join=join)


def state(plpy, GD, model, source, extra="", join=""):
    """One query for what a call needs to know: the features' version and the current
    snapshot (plus ``extra`` columns of a ``join``, for search's index); None when
    (model, source) has no features."""
    rows = plpy.execute(plan(plpy, GD, state_query(extra, join), ["text", "oid"]),
                        [model, source])
    return dict(rows[0]) if rows else None


def live(plpy, GD, function, model, source, dims, current=None):
    """The Live view of (model, source), from this backend's cache when nothing changed.

    ``current`` is the row of :func:`state` when the caller read it already. The first
    backend to need a snapshot builds it (or a new one, when the changes since the last
    have grown past MERGE_ROWS and MERGE_FRACTION) for every backend of the server; a
    backend holds at most about that many changed vectors of its own."""
    current = current if current is not None else state(plpy, GD, model, source)
    cache = GD.setdefault(_CACHE, {})
    key = (model, source)
    if current is None:
        cache.pop(key, None)
        empty = FeatureMatrix(np.empty(0, np.int64), np.empty((0, dims), np.float32))
        return Live(current, _PrivateSnapshot(empty), np.empty(0, np.int64), empty)
    hit = cache.get(key)
    if hit is not None and hit.state["version"] == current["version"] \
            and hit.state["generation"] == current["generation"]:
        return hit
    snapshot = None
    if hit is not None and current["generation"] is not None \
            and hit.state["generation"] == current["generation"]:
        snapshot = hit.snapshot
    elif current["sha256"] is not None and not current["snap_foreign"]:
        # a snapshot "from the future" came from another server (pg_dump and restore):
        # its transaction ids mean nothing here, so it is never trusted
        snapshot = _map(current["sha256"], dims)
    may_write = None
    if snapshot is None:
        may_write = _may_write(plpy, GD)
        if not may_write:
            view = _private(plpy, GD, function, model, source, dims, current)
            cache[key] = view
            return view
        current = build_snapshot(plpy, GD, function, model, source, dims, current)
        snapshot = _map(current["sha256"], dims)
    limit = max(MERGE_ROWS, MERGE_FRACTION * len(snapshot.ids))
    if count_changes(plpy, GD, model, source, current["snap"]) > REREAD_FACTOR * limit \
            and (may_write if may_write is not None else _may_write(plpy, GD)):
        may_write = True
        current = build_snapshot(plpy, GD, function, model, source, dims, current)
        snapshot = _map(current["sha256"], dims)
    changed, delta = changes_since(plpy, GD, function, model, source, dims, current["snap"])
    view = Live(current, snapshot, changed, delta)
    if len(changed) > limit and (may_write if may_write is not None else _may_write(plpy, GD)):
        current = build_snapshot(plpy, GD, function, model, source, dims, current, view)
        view = Live(current, _map(current["sha256"], dims), *changes_since(
            plpy, GD, function, model, source, dims, current["snap"]))
    cache[key] = view
    return view


def _map(sha, dims):
    """The mapped snapshot file ``sha`` if it is present and intact, else None."""
    path = store.check(sha, "vec")
    if path is None:
        return None
    try:
        snapshot = store.Snapshot(path)
    except ValueError:
        store.remove(sha, "vec")
        return None
    return snapshot if snapshot.dims == dims else None


def _may_write(plpy, GD):
    """Whether this call may record a snapshot: not in a read-only transaction (or on a
    standby), nor inside a STABLE function (whose statements may not write)."""
    try:
        with plpy.subtransaction():
            spi.write(plpy, GD, plan(plpy, GD, "UPDATE vision.feature_snapshots SET n = n "
                                     "WHERE false"))
        return True
    except plpy.SPIError:
        return False


def _private(plpy, GD, function, model, source, dims, current):
    matrix = _read_matrix(plpy, GD, function, model, source, dims)
    empty = FeatureMatrix(np.empty(0, np.int64), np.empty((0, dims), np.float32))
    return Live(current, _PrivateSnapshot(matrix), np.empty(0, np.int64), empty)


def _lock(plpy, GD, model, source):
    """Serialise snapshot builds of (model, source) until this transaction ends."""
    plpy.execute(plan(plpy, GD, "SELECT pg_catalog.pg_advisory_xact_lock("
                      "pg_catalog.hashtextextended('pgvision/snapshot/' || $1 || '/' || $2, 0))",
                      ["text", "text"]), [model, str(source)])


def build_snapshot(plpy, GD, function, model, source, dims, current, view=None):
    """Write a new shared snapshot of (model, source) and record it: from ``view`` (the old
    snapshot and the changes since) when given, else read from vision.features. Another
    backend building the same one meanwhile is waited for and its result used."""
    _lock(plpy, GD, model, source)
    latest = state(plpy, GD, model, source)
    if latest is not None and latest["generation"] != current["generation"] \
            and latest["sha256"] is not None and not latest["snap_foreign"] \
            and _map(latest["sha256"], dims) is not None:
        return latest  # built by another backend while this one waited
    snap = current_snapshot(plpy, GD)
    if view is not None:
        try:
            view.verify()  # a damaged row is never copied into a new snapshot
        except DamagedSnapshot as damage:
            discard(plpy, GD, function, damage)
            view = None
    if view is not None:
        # the changes are re-read under the new snapshot, so none committed meanwhile is lost
        changed, delta = changes_since(plpy, GD, function, model, source, dims,
                                       current["snap"])
        view = Live(current, view.snapshot, changed, delta)
        sha, size, n = store.write_snapshot(dims, _merged_blocks(view))
    else:
        sha, size, n = store.write_snapshot(dims, _table_blocks(plpy, GD, function, model,
                                                                source, dims))
    spi.write(plpy, GD, plan(plpy, GD, """
        INSERT INTO vision.feature_snapshots AS s (model, source, snap, n, dims, sha256, size_bytes)
        VALUES ($1, $2, $3::pg_catalog.pg_snapshot, $4, $5, $6, $7)
        ON CONFLICT (model, source) DO UPDATE SET snap = EXCLUDED.snap, n = EXCLUDED.n,
            dims = EXCLUDED.dims, sha256 = EXCLUDED.sha256, size_bytes = EXCLUDED.size_bytes,
            generation = pg_catalog.nextval('vision.feature_snapshot_seq'),
            built_at = pg_catalog.clock_timestamp()""",
        ["text", "oid", "text", "int8", "int4", "text", "int8"]),
        [model, source, snap, n, dims, sha, size])
    forget_changes(plpy, GD, model, source)
    collect_garbage(plpy, GD)
    return state(plpy, GD, model, source)


def collect_garbage(plpy, GD, grace_seconds=store.GRACE_SECONDS):
    """Remove store files that no snapshot or index of this database names any more."""
    named = {r["sha256"] for r in plpy.execute(plan(plpy, GD,
             "SELECT sha256 FROM vision._store_files()"))}
    return store.collect_garbage(named, grace_seconds)


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
    with spi.reading_for_everyone(GD):
        rows = plpy.execute(plan(plpy, GD, """
            SELECT c.image_id, pg_catalog.array_send(f.feature) AS f
            FROM (SELECT DISTINCT image_id""" + _SINCE + """) c
            LEFT JOIN vision.features f
              ON f.model = $1 AND f.source = $2 AND f.image_id OPERATOR(pg_catalog.=) c.image_id
            ORDER BY c.image_id""", ["text", "oid", "text"]), [model, source, snap])
    changed = np.array([r["image_id"] for r in rows], dtype=np.int64)
    present = [r for r in rows if r["f"] is not None]
    return changed, FeatureMatrix(
        np.array([r["image_id"] for r in present], dtype=np.int64),
        np.vstack([_decode(function, model, r, dims) for r in present]) if present
        else np.empty((0, dims), np.float32))


def _decode(function, model, row, dims):
    try:
        return decode_array(row["f"], dims)
    except ValueError as err:
        raise PgvisionError(function, f"stored feature of image {row['image_id']} for "
                            f"model {model!r} {err}", DATATYPE_MISMATCH) from None


def _table_blocks(plpy, GD, function, model, source, dims, block=2000):
    with spi.reading_for_everyone(GD):
        cursor = plpy.cursor(plan(plpy, GD, "SELECT image_id, pg_catalog.array_send(feature) "
                                  "AS f FROM vision.features WHERE model = $1 AND source = $2 "
                                  "ORDER BY image_id", ["text", "oid"]), [model, source])
    while True:
        with spi.reading_for_everyone(GD):
            rows = cursor.fetch(block)
        if not rows:
            return
        yield (np.array([r["image_id"] for r in rows], dtype=np.int64),
               np.vstack([_decode(function, model, r, dims) for r in rows]))


def _merged_blocks(view, block=4096):
    """The current rows of a Live view in id order, a block at a time (the snapshot part is
    read from the mapped file, never copied whole)."""
    base = view.snapshot
    keep = np.arange(len(base.ids)) if view.alive is None else np.flatnonzero(view.alive)
    ids = np.concatenate([base.ids[keep], view.delta.ids])
    where = np.concatenate([keep, -1 - np.arange(len(view.delta.ids))])
    order = np.argsort(ids, kind="stable")
    for start in range(0, len(order), block):
        part = where[order[start:start + block]]
        out = np.empty((len(part), base.vectors.shape[1]), np.float32)
        from_base = part >= 0
        out[from_base] = base.vectors[part[from_base]]
        out[~from_base] = view.delta.vectors[-1 - part[~from_base]]
        yield ids[order[start:start + block]], out


def _read_matrix(plpy, GD, function, model, source, dims):
    ids, vectors = [], []
    for block_ids, block in _table_blocks(plpy, GD, function, model, source, dims):
        ids.append(block_ids)
        vectors.append(block)
    return FeatureMatrix(np.concatenate(ids) if ids else np.empty(0, np.int64),
                         np.vstack(vectors) if vectors else np.empty((0, dims), np.float32))


def fetch(plpy, GD, model, source, ids, dims):
    """Features of some images as the caller may read them (the source table's row-level
    security applies through vision.features' policy)."""
    rows = plpy.execute(plan(plpy, GD, "SELECT image_id, pg_catalog.array_send(feature) AS f "
                             "FROM vision.features WHERE model = $1 AND source = $2 "
                             "AND image_id OPERATOR(pg_catalog.=) ANY($3) ORDER BY image_id",
                             ["text", "oid", "int8[]"]), [model, source, [int(i) for i in ids]])
    return FeatureMatrix(np.array([r["image_id"] for r in rows], dtype=np.int64),
                         np.vstack([decode_array(r["f"], dims) for r in rows]) if rows
                         else np.empty((0, dims), np.float32))
