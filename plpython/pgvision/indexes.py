"""The SQL functions that build, refresh and drop a table's index (HNSW or IVF)
(``vision.create_index``, ``vision.refresh_index``, ``vision.drop_index``); the index itself
is :mod:`pgvision.ann`."""

import time

import numpy as np

from . import (ann, featurestore, halfprecision, privileges, registry, sharedfiles, snapshots,
               spi)
from .errors import (UNDEFINED_OBJECT, PgvisionError, require, require_choice,
                     require_int_range, require_not_null)
from .neighbours import METRICS

FN_CREATE_INDEX = "vision.create_index"
FN_REFRESH_INDEX = "vision.refresh_index"
FN_DROP_INDEX = "vision.drop_index"


def create_index(plpy, GD, source, model=None, metric="cosine", m=16, ef_construction=64,
                 ef_search=40, pca_dims=None, storage="float32", method=None, lists=None,
                 probes=None):
    """Build (or rebuild) the index of (model, source): HNSW, or IVF (``method``; by
    default chosen by the table's size, ann.default_method), store it in vision.indexes and
    vision.index_chunks, and map it for every backend of the server."""
    fn = FN_CREATE_INDEX
    require_not_null(fn, "source", source)
    require_choice(fn, "metric", metric, METRICS)
    require_int_range(fn, "m", m, 2, 128)
    require_int_range(fn, "ef_construction", ef_construction, 4, 4096)
    require_int_range(fn, "ef_search", ef_search, 1, 4096)
    require_choice(fn, "storage", storage, ann.STORAGES)
    if method is not None:
        require_choice(fn, "method", method, ann.METHODS)
    if lists is not None:
        require_int_range(fn, "lists", lists, 1, 65536)
    if probes is not None:
        require_int_range(fn, "probes", probes, 1, 65536)
    for name, value in (("lists", lists), ("probes", probes)):
        require(fn, name, value, value is None or method != "hnsw",
                "NULL for method 'hnsw' (it sets the lists of method 'ivf')")
    model_row = registry.lookup(plpy, GD, fn, model)
    if pca_dims is not None:
        require_int_range(fn, "pca_dims", pca_dims, 2, model_row["dims"])
    source = featurestore.resolve_source(plpy, GD, fn, model_row["name"], source)
    _require_index_owner(plpy, GD, fn, model_row["name"], source)
    view = _merged(plpy, GD, fn, model_row, source)
    n = len(view.snapshot.ids)
    require(fn, "source", source, n > (pca_dims or 0), "a table with more stored features "
            f"than pca_dims ({pca_dims})" if pca_dims else "a table with stored features")
    if method is None:  # by size, unless the arguments say which
        method = ("ivf" if lists is not None or probes is not None else
                  "hnsw" if pca_dims is not None else ann.default_method(n))
    require(fn, "pca_dims", pca_dims, pca_dims is None or method != "ivf",
            "NULL for method 'ivf' (PCA is offered with HNSW)")
    if method == "ivf":
        lists = lists if lists is not None else ann.default_lists(n)
        require(fn, "lists", lists, lists <= n, f"at most the {n} stored features (each list "
                "is a k-means centre)")
        probes = probes if probes is not None else ann.DEFAULT_PROBES
    started = time.monotonic()
    index = ann.build_index(view.snapshot.vectors, metric, m, ef_construction, pca_dims, storage,
                            method, lists)
    ann.store_index(plpy, GD, model_row, source, view.state["snap"], index,
                 np.asarray(view.snapshot.ids), np.zeros(n, bool),
                 time.monotonic() - started, dict(metric=metric, m=m,
                 ef_construction=ef_construction, ef_search=ef_search, pca_dims=pca_dims,
                 storage=storage, method=method, lists=lists, probes=probes))
    return n


def _merged(plpy, GD, fn, model_row, source):
    """The Live view after folding every change into a new shared snapshot (so an index
    built on it starts with nothing to search exactly), in half precision where the rows
    allow: a float32 snapshot is written again so (an indexed table's snapshot only
    re-ranks and answers exact searches)."""
    def checked():
        view = snapshots.live(plpy, GD, fn, model_row["name"], source, model_row["dims"])
        view.verify()  # an index is never built from a damaged row
        return view
    view = snapshots.verified(plpy, GD, fn, checked)
    single = view.snapshot.vectors.dtype != np.float16 and len(view.snapshot.ids)
    if not (len(view.changed) or single):
        return view
    # asked once, here: build_snapshot takes the answer rather than asking again
    held = halfprecision.held_in_half(plpy, GD, model_row["name"], source, model_row["dims"])
    if len(view.changed) or held:
        current = snapshots.build_snapshot(plpy, GD, fn, model_row["name"], source,
                                              model_row["dims"], view.state, view, half=held)
        view = snapshots.live(plpy, GD, fn, model_row["name"], source, model_row["dims"],
                                 current)
    return view


def _require_index_owner(plpy, GD, fn, model, source):
    """Refuse unless the caller owns the index of (model, source), if there is one (or is
    vision_admin); whether there is one."""
    existing = plpy.execute(spi.plan(plpy, GD, "SELECT owner FROM vision.indexes "
                                     "WHERE model = $1 AND source = $2", ["text", "oid"]),
                            [model, source])
    if existing:
        privileges.require_owner(plpy, GD, fn, f"the index of model {model!r} on "
                          f"{privileges.table_name(plpy, GD, source)}", existing[0]["owner"])
    return bool(existing)


def refresh_index(plpy, GD, source, model=None):
    """Bring an index up to date: fold the changes since its build in (new and changed
    vectors added, replaced and deleted entries marked dead), or rebuild when more than
    ann.REBUILD_FRACTION of it is out of date: 'fresh', 'added N', 'removed M', 'added N, removed
    M' or 'rebuilt'."""
    fn = FN_REFRESH_INDEX
    require_not_null(fn, "source", source)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    model = model_row["name"]
    row = plpy.execute(spi.plan(plpy, GD, """
        SELECT metric, m, ef_construction, ef_search, pca_dims, storage, method, lists, probes,
               snap::text AS snap,
               sha256, entry_ids, dead, owner, """ + featurestore.from_another_server("snap") + """
                 AS foreign_snap
        FROM vision.indexes WHERE model = $1 AND source = $2""", ["text", "oid"]),
        [model, source])
    if not row:
        raise PgvisionError(fn, f"model {model!r} has no index on this table", UNDEFINED_OBJECT,
                            hint="Create one with vision.create_index.")
    row = dict(row[0])
    privileges.require_owner(plpy, GD, fn, f"the index of model {model!r} on "
                      f"{privileges.table_name(plpy, GD, source)}", row["owner"])
    params = {key: row[key] for key in ("metric", "m", "ef_construction", "ef_search",
                                        "pca_dims", "storage", "method", "lists", "probes")}
    # the snapshot the refreshed index will carry is taken before the changes are read, so
    # a change committed in between is both in the index and searched beside it, never lost
    snap = featurestore.current_snapshot(plpy, GD)
    changed, fresh = featurestore.changes_since(plpy, GD, fn, model, source, model_row["dims"],
                                                row["snap"])
    if not len(changed) and not row["foreign_snap"]:
        return "fresh"
    entry_ids, dead = ann.entries(row)
    now_dead = dead | np.isin(entry_ids, changed)
    path = None if row["foreign_snap"] else sharedfiles.check(row["sha256"], "faiss")
    if path is None and not row["foreign_snap"] and ann.restore(
            plpy, GD, model, source, row["sha256"]):
        path = sharedfiles.check(row["sha256"], "faiss")
    started = time.monotonic()
    if path is not None and (now_dead.sum() + len(fresh.ids)
                             <= ann.REBUILD_FRACTION * (len(entry_ids) + len(fresh.ids))):
        index = ann.faiss_module().read_index(path)  # a private, writable copy
        ann.add_vectors(index, fresh.vectors, params["metric"])
        removed = int(now_dead.sum() - dead.sum())
        ann.store_index(plpy, GD, model_row, source, snap, index,
                     np.concatenate([entry_ids, fresh.ids]),
                     np.concatenate([now_dead, np.zeros(len(fresh.ids), bool)]),
                     time.monotonic() - started, params)
        return ", ".join(f"{word} {count}" for word, count in
                         (("added", len(fresh.ids)), ("removed", removed)) if count)
    reason = ("it was restored from another server" if row["foreign_snap"] else
              "the stored index could not be read" if path is None else
              f"{int(now_dead.sum())} of {len(entry_ids)} entries replaced or deleted and "
              f"{len(fresh.ids)} to add")
    plpy.notice(f"{fn}: rebuilding the index of model {model!r}: {reason}")
    view = _merged(plpy, GD, fn, model_row, source)
    index = ann.build_index(view.snapshot.vectors, params["metric"], params["m"],
                        params["ef_construction"], params["pca_dims"], params["storage"],
                        params["method"], params["lists"])
    n = len(view.snapshot.ids)
    ann.store_index(plpy, GD, model_row, source, view.state["snap"], index,
                 np.asarray(view.snapshot.ids), np.zeros(n, bool),
                 time.monotonic() - started, params)
    return "rebuilt"


def drop_index(plpy, GD, source, model=None):
    """Drop a table's index (its owner or vision_admin); true if there was one."""
    fn = FN_DROP_INDEX
    require_not_null(fn, "source", source)
    model_row = registry.lookup(plpy, GD, fn, model)
    source = featurestore.resolve_source(plpy, GD, fn, model_row["name"], source)
    if not _require_index_owner(plpy, GD, fn, model_row["name"], source):
        return False
    for table in ("indexes", "index_chunks"):
        spi.write(plpy, GD, spi.plan(plpy, GD, f"DELETE FROM vision.{table} WHERE model = $1 "
                                     "AND source = $2", ["text", "oid"]),
                  [model_row["name"], source])
    ann.forget(GD, model_row["name"], source)
    return True
