"""Live views of stored features: a snapshot file every backend of a server maps, plus the
changes since it was taken.

The first backend to need the features of (model, source) writes a snapshot file (see
:mod:`pgvision.sharedfiles`) and records it, with the transaction snapshot it read under, in
``vision.feature_snapshots``; every backend maps that file read-only and reads only the
changes :mod:`pgvision.featurestore` logs since. A damaged snapshot row is never answered:
:func:`verified` drops the file and does the work again from a rebuilt one.
"""

import numpy as np

from . import float16, halfprecision, sharedfiles, spi
from .errors import DATA_CORRUPTED, PgvisionError
from .featurestore import (FeatureMatrix, changes_since, collect_garbage, count_changes,
                           current_snapshot, forget_changes, members, read_matrix, state,
                           table_blocks, visible)
from .spi import plan

_CACHE = "pgvision.matrices"


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


# The changes since a snapshot are held by every backend that searches (privately): past
# MERGE_ROWS and MERGE_FRACTION of the snapshot they are merged into a new one; past
# REREAD_FACTOR times that (a bulk load) the new one is read from the table instead of the
# changes being read into memory first.
MERGE_ROWS = 2000
MERGE_FRACTION = 0.01
REREAD_FACTOR = 4


class Live:
    """What a backend holds of (model, source): the shared snapshot (a mapped sharedfiles.Snapshot,
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
        snapshot row is checked against its checksum (once per mapping). Always float32: a
        half-precision snapshot is made single here (0.1 s per 100k 2048-d rows)."""
        self.verify()
        if self._matrix is None:
            base = self.snapshot
            if self.alive is None and not len(self.delta.ids):
                self._matrix = FeatureMatrix(base.ids, float16.single(base.vectors),
                                             base.norms)
            else:
                keep = np.arange(len(base.ids)) if self.alive is None else np.flatnonzero(self.alive)
                ids = np.concatenate([base.ids[keep], self.delta.ids])
                order = np.argsort(ids, kind="stable")
                vectors = np.concatenate([float16.single(base.vectors[keep]),
                                          self.delta.vectors])[order]
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
        """FeatureMatrix of the current vectors (float32) of ``ids`` (those that exist), no
        SQL."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        base = self.snapshot
        present, positions = self._snapshot_rows(ids)
        from_base = float16.single(base.vectors[positions])
        if not len(self.changed):
            return FeatureMatrix(present, from_base, base.norms[positions])
        from_delta = ids[np.isin(ids, self.delta.ids)]
        rows = np.concatenate([present, from_delta])
        at = self.delta.positions(from_delta)
        order = np.argsort(rows)
        return FeatureMatrix(rows[order],
                             np.concatenate([from_base, self.delta.vectors[at]])[order],
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
    sharedfiles.remove(damage.sha256, "vec")
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
    path = sharedfiles.check(sha, "vec")
    if path is None:
        return None
    try:
        snapshot = sharedfiles.Snapshot(path)
    except ValueError:
        sharedfiles.remove(sha, "vec")
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
    matrix = read_matrix(plpy, GD, function, model, source, dims)
    empty = FeatureMatrix(np.empty(0, np.int64), np.empty((0, dims), np.float32))
    return Live(current, _PrivateSnapshot(matrix), np.empty(0, np.int64), empty)


def _lock(plpy, GD, model, source):
    """Serialise snapshot builds of (model, source) until this transaction ends."""
    plpy.execute(plan(plpy, GD, "SELECT pg_catalog.pg_advisory_xact_lock("
                      "pg_catalog.hashtextextended('pgvision/snapshot/' || $1 || '/' || $2, 0))",
                      ["text", "text"]), [model, str(source)])


def build_snapshot(plpy, GD, function, model, source, dims, current, view=None, half=None):
    """Write a new shared snapshot of (model, source) and record it: from ``view`` (the old
    snapshot and the changes since) when given, else read from vision.features. Another
    backend building the same one meanwhile is waited for and its result used.

    The snapshot holds half precision (half the disk and page cache) when the table has an
    index, which answers its searches (exact search over half precision takes ~2.3x as
    long), and every stored row is held in half precision; float32 whenever a row is not
    held exactly. A caller that has asked :func:`halfprecision.held_in_half` passes its
    answer as ``half``."""
    _lock(plpy, GD, model, source)
    latest = state(plpy, GD, model, source, with_index=half is None)
    if latest is not None and latest["generation"] != current["generation"] \
            and latest["sha256"] is not None and not latest["snap_foreign"] \
            and _map(latest["sha256"], dims) is not None:
        return latest  # built by another backend while this one waited
    if half is None:
        # asked before writing: a table with rows of single precision would otherwise be
        # written twice, half then float32, at every snapshot while compact_features runs
        half = latest is not None and latest["index_generation"] is not None and \
            halfprecision.held_in_half(plpy, GD, model, source, dims)
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
        blocks = lambda: _merged_blocks(view)  # noqa: E731
    else:
        blocks = lambda: table_blocks(plpy, GD, function, model, source, dims)  # noqa: E731
    try:
        sha, size, n = sharedfiles.write_snapshot(dims, blocks(), half=half)
    except sharedfiles.NotHalf:
        # a single-precision row written since held_in_half was asked: the snapshot keeps
        # every value exactly, in float32
        sha, size, n = sharedfiles.write_snapshot(dims, blocks())
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
        out[from_base] = float16.single(base.vectors[part[from_base]])
        out[~from_base] = view.delta.vectors[-1 - part[~from_base]]
        yield ids[order[start:start + block]], out
