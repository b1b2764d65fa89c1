"""Visual search: exact k-NN over the shared feature matrix, HNSW indexes (faiss) that
every backend maps, and a materialised top-k neighbours table.

Distances, smaller is closer: ``cosine`` = 1 − cos, ``l2`` = Euclidean, ``ip`` = −dot
(as pgvector's ``<#>``). Ties are broken by ascending image id, so results are deterministic.

An index is built over a feature snapshot; its entries are numbered in the order they were
added, ``vision.indexes.entry_ids`` maps them to image ids and ``dead`` marks replaced or
deleted ones. Images changed since the index's transaction snapshot are filtered out of its
answers (a faiss ID selector) and searched exactly beside it, so an answer is never stale.

Why faiss (measured against usearch, hnswlib and annoy, shared/FACTS.md): manylinux
wheels, HNSW with float32 / float16 / int8 storage and PCA behind one API, ID selectors for
filtered search, and ``IO_FLAG_MMAP_IFC``, which maps an index file without a private copy
(and searched 2-5x faster than usearch's mapped view here).
"""

import os
import time

import numpy as np

from . import extract, featurestore, privileges, registry, settings, spi, store
from .errors import (DATATYPE_MISMATCH, UNDEFINED_OBJECT, PgvisionError, require,
                     require_choice, require_int_range, require_not_null)

METRICS = ("cosine", "l2", "ip")
MAX_K = 10_000
_INDEX_CACHE = "pgvision.indexes"

FN_SIMILAR = "vision.similar"
FN_SIMILAR_IMAGE = "vision.similar_to_image"
FN_SIMILAR_MANY = "vision.similar_many"
FN_SIMILAR_VECTOR = "vision.similar_to_vector"
FN_CREATE_INDEX = "vision.create_index"
FN_REFRESH_INDEX = "vision.refresh_index"
FN_NEIGHBOURS = "vision.refresh_neighbours"


# --- exact search (pure numpy) ----------------------------------------------------------

def distances(matrix, query, metric, rows=None):
    """Distances from ``query`` to the matrix rows (all, or the ``rows`` positions)."""
    vectors = matrix.vectors if rows is None else matrix.vectors[rows]
    norms = matrix.norms if rows is None else matrix.norms[rows]
    dots = vectors @ query
    if metric == "ip":
        return -dots
    qnorm = float(np.linalg.norm(query))
    if metric == "cosine":
        return 1.0 - dots / np.maximum(norms * qnorm, 1e-12)
    return np.sqrt(np.maximum(norms ** 2 - 2.0 * dots + qnorm ** 2, 0.0))


def top_k(ids, dist, k):
    """The k smallest distances, ties by ascending id: (ids, distances) sorted."""
    if len(ids) > k:
        # argpartition, widened to every row tied with the k-th distance
        kth = np.partition(dist, k - 1)[k - 1]
        keep = np.flatnonzero(dist <= kth)
        ids, dist = ids[keep], dist[keep]
    order = np.lexsort((ids, dist))[:k]
    return ids[order], dist[order]


def exact(matrix, query, metric, k, exclude=None, candidates=None):
    """Exact k-NN over the matrix, optionally restricted to candidate ids."""
    rows = None
    if candidates is not None:
        rows = np.flatnonzero(np.isin(matrix.ids, np.asarray(candidates, dtype=np.int64)))
    ids = matrix.ids if rows is None else matrix.ids[rows]
    dist = distances(matrix, query, metric, rows)
    if exclude is not None:
        keep = ids != exclude
        ids, dist = ids[keep], dist[keep]
    return top_k(ids, dist, k)


def exact_live(view, query, metric, k, exclude=None, candidates=None):
    """Exact k-NN over a featurestore.Live view: the mapped snapshot (rows changed since it
    masked out) and the changes, without copying the snapshot."""
    base, delta = view.snapshot, view.delta
    rows = None
    if candidates is not None:
        rows = np.flatnonzero(np.isin(base.ids, np.asarray(candidates, dtype=np.int64)))
    dist = distances(base, query, metric, rows)
    ids = base.ids if rows is None else base.ids[rows]
    if view.alive is not None:
        alive = view.alive if rows is None else view.alive[rows]
        dist = np.where(alive, dist, np.inf)
    found, dist = top_k(ids, dist, k + 1)
    keep = np.isfinite(dist)
    found, dist = found[keep], dist[keep]
    if len(delta.ids):
        more = exact(delta, query, metric, k + 1, candidates=candidates)
        found, dist = top_k(np.concatenate([found, more[0]]), np.concatenate([dist, more[1]]),
                            k + 1)
    if exclude is not None:
        keep = found != exclude
        found, dist = found[keep], dist[keep]
    return found[:k], dist[:k]


# --- HNSW index (faiss) -----------------------------------------------------------------

STORAGES = ("float32", "float16", "int8")
CHUNK_BYTES = 64 << 20   # an index is stored in rows of this size: no 1 GB value ceiling
REBUILD_FRACTION = 0.2   # refresh rebuilds once this fraction of entries is out of date
_TRAIN_ROWS = 50_000
_ADD_ROWS = 16_384


def _faiss():
    import faiss
    return faiss


def _prepare(vectors, metric):
    """Vectors as the index sees them: unit length for cosine."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)[:, None]
    return vectors


def new_index(dims, metric, m=16, ef_construction=64, pca_dims=None, storage="float32"):
    """An empty HNSW index (faiss); entries are numbered in the order they are added."""
    faiss = _faiss()
    inner_metric = faiss.METRIC_INNER_PRODUCT if metric != "l2" and not (
        pca_dims and metric == "cosine") else faiss.METRIC_L2
    width = pca_dims or dims
    if storage == "float32":
        hnsw = faiss.IndexHNSWFlat(width, m, inner_metric)
    else:
        kind = {"float16": faiss.ScalarQuantizer.QT_fp16,
                "int8": faiss.ScalarQuantizer.QT_8bit}[storage]
        hnsw = faiss.IndexHNSWSQ(width, kind, m, inner_metric)
    hnsw.hnsw.efConstruction = ef_construction
    if pca_dims:
        return faiss.IndexPreTransform(faiss.PCAMatrix(dims, pca_dims), hnsw)
    return hnsw


def add_vectors(index, vectors, metric, train=False):
    """Add rows (any array-like, e.g. a mapped snapshot) a block at a time, so a matrix
    larger than memory never needs a second copy; trains first when asked."""
    faiss = _faiss()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    if train and not index.is_trained:
        step = max(1, len(vectors) // _TRAIN_ROWS)
        index.train(_prepare(vectors[::step], metric))
    for start in range(0, len(vectors), _ADD_ROWS):
        index.add(_prepare(vectors[start:start + _ADD_ROWS], metric))
    return index


def build_index(vectors, metric, m=16, ef_construction=64, pca_dims=None, storage="float32"):
    return add_vectors(new_index(vectors.shape[1], metric, m, ef_construction, pca_dims,
                                 storage), vectors, metric, train=True)


def ann(index, query, metric, k, ef_search, alive=None, scores=False):
    """Approximate candidates of each query: entry numbers, best first (-1 padding
    dropped), with faiss' scores when ``scores``. ``alive`` is a packed bitmap of the
    entries that may be returned."""
    faiss = _faiss()
    # One query has nothing to split across threads; waking an OpenMP team costs more
    # than the search itself.
    faiss.omp_set_num_threads(1)
    params = faiss.SearchParametersHNSW()
    params.efSearch = max(ef_search, k)
    selector = None
    if alive is not None:
        selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(alive))
        params.sel = selector
    queries = _prepare(np.atleast_2d(query), metric)
    raw, found = index.search(queries, k, params=params)
    if scores:
        return [(row[row >= 0], score[row >= 0]) for row, score in zip(found, raw)]
    return [row[row >= 0] for row in found]


def index_distance(scores, metric):
    """faiss scores of an unreduced index → pgvision's distances."""
    if metric == "cosine":
        return 1.0 - scores
    if metric == "ip":
        return -scores
    return np.sqrt(np.maximum(scores, 0.0))


class _Index:
    """A mapped index, its entries' image ids, and which entries are dead."""

    def __init__(self, handle, faiss_index, entry_ids, dead):
        self.handle = handle          # keeps the object faiss.read_index returned alive
        self.faiss = faiss_index
        self.entry_ids = entry_ids
        self.dead = dead              # bool per entry: replaced or deleted since it was added
        self._alive = {}

    def alive(self, changed):
        """Packed bitmap of entries that may answer (not dead, not changed since the build);
        None when all may (a search without a filter is faster)."""
        key = changed.tobytes()
        if key not in self._alive:
            ok = ~self.dead
            if len(changed):
                ok &= ~np.isin(self.entry_ids, changed)
            self._alive = {key: None if ok.all() else np.packbits(ok, bitorder="little")}
        return self._alive[key]


def _entries(row):
    """An index row's entry image ids and dead flags, as stored by :func:`_store_index`."""
    entry_ids = np.frombuffer(bytes(row["entry_ids"]), dtype="<i8")
    dead = np.unpackbits(np.frombuffer(bytes(row["dead"]), dtype=np.uint8),
                         count=len(entry_ids), bitorder="little").astype(bool)
    return entry_ids, dead


def _write_index(index):
    """Write a faiss index as a store file: (sha256, size)."""
    tmp = store.incoming()
    try:
        _faiss().write_index(index, tmp)
        return store.adopt(tmp, "faiss")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _map_index(sha, entry_ids, dead):
    faiss = _faiss()
    path = store.check(sha, "faiss")
    if path is None:
        return None
    handle = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
    return _Index(handle, faiss.downcast_index(handle), entry_ids, dead)


# --- SQL-facing -------------------------------------------------------------------------

def _validate(fn, k, metric, candidates=None):
    require_int_range(fn, "k", k, 1, MAX_K)
    require_choice(fn, "metric", metric, METRICS)
    if candidates is not None:
        require(fn, "candidates", "NULL element", None not in candidates,
                "an array of image ids without NULLs")


# what a search needs of the index, read with the features' state in one query
_INDEX_STATE = dict(
    extra=""", i.generation AS index_generation, i.metric AS index_metric, i.ef_search,
           i.sha256 AS index_sha, i.snap::text AS index_snap, i.dims AS index_dims,
           i.storage AS index_storage, i.pca_dims AS index_pca,
           """ + featurestore.from_another_server("i.snap") + """ AS index_foreign,
           pg_catalog.current_setting('pgvision.ef_search', true) AS ef_setting""",
    join=" LEFT JOIN vision.indexes i USING (model, source)")


_CONTEXT = """
    SELECT m.name, m.sha256 AS model_sha256, m.model_path, m.input_height, m.input_width,
           m.preprocessing, m.feature_layer, m.pooling, m.dims,
           $2::pg_catalog.regclass::pg_catalog.oid AS source_oid,
           pg_catalog.has_table_privilege($2::pg_catalog.regclass, 'SELECT') AS may_read,
           pg_catalog.row_security_active($2::pg_catalog.regclass) AS rls_active,
           st.*
    FROM vision.model_store m
    LEFT JOIN LATERAL ({state}) st ON true
    WHERE m.name = $1"""
_REGISTRY = ("name", "model_sha256", "model_path", "input_height", "input_width", "preprocessing",
             "feature_layer", "pooling", "dims")


def _context(plpy, GD, fn, model, source):
    """(registry row, source OID, featurestore state with the index's) of a search: one
    query when the table is named, as an application's calls do."""
    if model is None or source is None:
        model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
        return model_row, source, featurestore.state(plpy, GD, model_row["name"], source,
                                                     **_INDEX_STATE)
    rows = plpy.execute(spi.plan(plpy, GD, _CONTEXT.format(
        state=featurestore.state_query(**_INDEX_STATE)), ["text", "regclass"]), [model, source])
    if not rows:
        registry.lookup(plpy, GD, fn, model)  # raises the error that names the model
    row = rows[0]
    if not row["may_read"]:
        privileges.require_select(plpy, GD, fn, row["source_oid"], f"{fn} over its images")
    model_row = {key.replace("model_sha256", "sha256"): row[key] for key in _REGISTRY}
    current = None if row["version"] is None else {
        key: value for key, value in row.items() if key not in _REGISTRY}
    return model_row, row["source_oid"], current


# Where row-level security hides rows, a search first asks for this many times k candidates
# divided by the share of candidates the caller saw last time (per table, in this backend):
# one round, one check, as a rule.
_SEEN_SHARE = "pgvision.seen_share"
_MARGIN = 1.5


def _index(plpy, GD, fn, model, source, current):
    """The mapped index of (model, source), cached by generation; None (with a WARNING) when
    its stored bytes are damaged."""
    cache = GD.setdefault(_INDEX_CACHE, {})
    hit = cache.get((model, source))
    if hit is not None and hit[0] == current["index_generation"]:
        return hit[1]
    entry_ids, dead = _entries(plpy.execute(spi.plan(
        plpy, GD, "SELECT entry_ids, dead FROM vision.indexes WHERE model = $1 AND source = $2",
        ["text", "oid"]), [model, source])[0])
    sha = current["index_sha"]
    index = _map_index(sha, entry_ids, dead)
    if index is None:
        index = _restore_index(plpy, GD, fn, model, source, sha, entry_ids, dead)
    cache[(model, source)] = (current["index_generation"], index)
    return index


def _restore_index(plpy, GD, fn, model, source, sha, entry_ids, dead):
    """Write the index file again from its chunks in vision.index_chunks."""
    cursor = plpy.cursor(spi.plan(plpy, GD, "SELECT data FROM vision.index_chunks "
                                  "WHERE model = $1 AND source = $2 ORDER BY part",
                                  ["text", "oid"]), [model, source])

    def parts():
        while True:
            rows = cursor.fetch(1)
            if not rows:
                return
            yield bytes(rows[0]["data"])
    written, _ = store.write_parts("faiss", parts())
    if written != sha:
        store.remove(written, "faiss")
        plpy.warning(f"{fn}: the stored index of model {model!r} is corrupted (checksum "
                     "mismatch); using exact search. Rebuild it with vision.create_index.")
        return None
    return _map_index(sha, entry_ids, dead)


def _searcher(plpy, GD, fn, model_row, source, current, k, metric, candidates, approximate):
    """``search(query, exclude) -> (ids, distances)`` over the state of :func:`_context`;
    ``search.view`` is the featurestore.Live view it searches; ``search.visible(ids)``
    the ids among ``ids`` that the caller may see (all of them, without row-level security).

    Where the source table's row-level security applies to the caller, the shared snapshot
    and index are searched for more candidates than k, as many times as needed, and only
    those the caller's SELECT returns are answered."""
    if current is None:
        column = None  # nothing stored: nothing to hide
    elif "rls_active" in current:
        column = featurestore.id_column(plpy, GD, source, current["version"]) \
            if current["rls_active"] else None
    else:  # the context came without it
        column = featurestore.row_security(plpy, GD, source)
    if column is None:
        search = _unfiltered(plpy, GD, fn, model_row, source, current, k, metric, candidates,
                             approximate)
        search.visible = lambda ids: np.asarray(ids, dtype=np.int64)
        return search
    shares = GD.setdefault(_SEEN_SHARE, {})
    view = featurestore.live(plpy, GD, fn, model_row["name"], source, model_row["dims"],
                             current)
    total = len(view.snapshot.ids) + len(view.delta.ids)
    first = min(total, k + 1 + int(_MARGIN * k / max(shares.get(source, 0.5), 0.01)))
    searchers = {}

    def visible(ids):
        return featurestore.visible_in(plpy, GD, fn, source, column, ids)

    def filtered(query, exclude, also=()):
        """The k nearest the caller may see; ``filtered.hidden`` those of ``also`` (checked
        in the same query) that it may not."""
        wanted = max(first, 1)
        also = np.asarray(also, dtype=np.int64)
        while True:
            if wanted not in searchers:
                searchers[wanted] = _unfiltered(plpy, GD, fn, model_row, source, current,
                                                wanted, metric, candidates, approximate)
            found, dist = searchers[wanted](query, exclude)
            seen = visible(np.concatenate([found, also]))
            if len(also):
                filtered.hidden = set(also[~featurestore.members(also, seen)].tolist())
                also = also[:0]
            keep = featurestore.members(found, seen)
            if len(found):
                shares[source] = max(keep.mean(), 0.01)
            if keep.sum() >= k or len(found) < wanted or wanted >= total:
                return found[keep][:k], dist[keep][:k]
            wanted = min(4 * wanted, total)
    filtered.view = view
    filtered.visible = visible
    filtered.hidden = set()
    return filtered


def _unfiltered(plpy, GD, fn, model_row, source, current, k, metric, candidates, approximate):
    """:func:`_searcher` over every row, whoever the caller is."""
    model, dims = model_row["name"], model_row["dims"]
    view = featurestore.live(plpy, GD, fn, model, source, dims, current)

    def exact_search(query, exclude):
        return exact_live(view, query, metric, k, exclude, candidates)
    exact_search.view = view
    if candidates is not None or approximate is False:
        return exact_search
    has_index = current is not None and current["index_generation"] is not None
    if not has_index or current["index_metric"] != metric or current["index_foreign"]:
        if approximate:
            reason = ("no index" if not has_index else
                      "the index was restored from another server (its transaction "
                      "snapshot means nothing here)" if current["index_foreign"] else
                      f"the index is for metric {current['index_metric']!r}")
            plpy.notice(f"{fn}: {reason} for model {model!r}; using exact search "
                        "(vision.create_index builds one)")
        return exact_search
    if current["index_dims"] != dims:
        raise PgvisionError(fn, f"the index of model {model!r} has {current['index_dims']} "
                            f"dimensions but the model has {dims}", DATATYPE_MISMATCH,
                            hint="Rebuild it with vision.create_index.")
    index = _index(plpy, GD, fn, model, source, current)
    if index is None:
        return exact_search
    ef = settings.parse_setting("pgvision.ef_search", current["ef_setting"], current["ef_search"])
    # images changed since the index was built are searched exactly, never from the index
    # (the view's snapshot, which live() may just have renewed, is what the changes are of)
    if current["index_snap"] == view.state["snap"]:
        changed, fresh = view.changed, view.delta
    else:
        changed, fresh = _changes(plpy, GD, fn, model, source, dims, current)
    alive = index.alive(changed)
    # compressed and PCA-reduced indexes only approximate distances: their candidates are
    # re-ranked exactly; a float32 index's own distances are exact
    rerank = current["index_storage"] != "float32" or current["index_pca"] is not None
    wanted = max(ef, 2 * k + 1) if rerank else k + 1

    def many(queries, excludes):
        out = []
        results = ann(index.faiss, queries, metric, wanted, ef, alive, scores=True)
        for query, (entries, scores), exclude in zip(queries, results, excludes):
            ids = index.entry_ids[entries]
            if rerank:
                pool = view.vectors_of(ids)
                found, dist = top_k(pool.ids, distances(pool, query, metric), k + 1)
            else:
                found, dist = top_k(ids, index_distance(scores, metric), k + 1)
            if len(fresh.ids):
                more = exact(fresh, query, metric, k + 1)
                found, dist = top_k(np.concatenate([found, more[0]]),
                                    np.concatenate([dist, more[1]]), k + 1)
            keep = found != exclude if exclude is not None else slice(None)
            out.append((found[keep][:k], dist[keep][:k]))
        return out

    def approximate_search(query, exclude):
        return many(query[None, :], [exclude])[0]
    approximate_search.many = many
    approximate_search.view = view
    return approximate_search


def _changes(plpy, GD, fn, model, source, dims, current):
    """Changes since the index's snapshot (when it differs from the features'), cached by
    version."""
    cache = GD.setdefault(_INDEX_CACHE + ".changes", {})
    key = (model, source, current["version"], current["index_snap"])
    if key not in cache:
        cache.clear()
        cache[key] = featurestore.changes_since(plpy, GD, fn, model, source, dims,
                                                current["index_snap"])
    return cache[key]


def _search(plpy, GD, fn, context, query, k, metric, exclude, candidates, approximate):
    def answer():
        search = _searcher(plpy, GD, fn, *context, k, metric, candidates, approximate)
        found, dist = search(query, exclude)
        search.view.verify(found)
        return found, dist
    return featurestore.verified(plpy, GD, fn, answer)


def _rows(found, dist):
    return [(int(i), float(d), rank) for rank, (i, d) in enumerate(zip(found, dist), start=1)]


def _missing(plpy, GD, fn, argument, model, source, ids):
    name = privileges.table_name(plpy, GD, source)
    what = (f"image {ids[0]} of {name} has" if len(ids) == 1 else
            f"{len(ids)} image(s) of {name} have")
    example = "" if len(ids) == 1 else f" (e.g. {ids[:5]})"
    return PgvisionError(fn, f'argument "{argument}": {what} no features for model '
                         f"{model!r}{example}", UNDEFINED_OBJECT,
                         hint="CALL vision.extract_table(...) extracts missing features.")


def similar(plpy, GD, image_id, k=10, model=None, metric="cosine", source=None,
            candidates=None, approximate=None):
    """Images most like a stored image (itself excluded): rows (image_id, distance, rank)."""
    fn = FN_SIMILAR
    require_not_null(fn, "image_id", image_id)
    _validate(fn, k, metric, candidates)
    model_row, source, current = _context(plpy, GD, fn, model, source)

    def answer():
        search = _searcher(plpy, GD, fn, model_row, source, current, k, metric, candidates,
                           approximate)
        query = search.view.vectors_of([image_id])  # held here: no SQL
        if not len(query.ids):
            raise _missing(plpy, GD, fn, "image_id", model_row["name"], source, [image_id])
        if not hasattr(search, "hidden"):
            found, dist = search(query.vectors[0], image_id)
        else:  # whether the caller may see the query image is checked with the answer's ids
            found, dist = search(query.vectors[0], image_id, also=[image_id])
            if image_id in search.hidden:
                raise _missing(plpy, GD, fn, "image_id", model_row["name"], source, [image_id])
        search.view.verify(np.append(found, image_id))  # the answer and the query row
        return _rows(found, dist)
    return featurestore.verified(plpy, GD, fn, answer)


def similar_many(plpy, GD, image_ids, k=10, model=None, metric="cosine", source=None,
                 approximate=None):
    """vision.similar for many stored images in one call (one catalog lookup, one faiss
    call for all queries): rows (query_id, image_id, distance, rank)."""
    fn = FN_SIMILAR_MANY
    require_not_null(fn, "image_ids", image_ids)
    require(fn, "image_ids", f"{len(image_ids)} ids", 1 <= len(image_ids) <= 100_000,
            "an array of 1 to 100000 image ids")
    require(fn, "image_ids", "NULL element", None not in image_ids, "an array without NULLs")
    _validate(fn, k, metric)
    settings.require_within_limit(plpy, GD, fn, "rows (image_ids x k)", len(image_ids) * k,
                             "pgvision.max_result_rows")
    model_row, source, current = _context(plpy, GD, fn, model, source)

    def answer():
        search = _searcher(plpy, GD, fn, model_row, source, current, k, metric, None,
                           approximate)
        queries = search.view.vectors_of(search.visible(image_ids))
        missing = sorted(set(image_ids) - set(queries.ids.tolist()))
        if missing:
            raise _missing(plpy, GD, fn, "image_ids", model_row["name"], source, missing)
        search.view.verify(queries.ids)
        vectors = queries.vectors[queries.positions(image_ids)]
        if hasattr(search, "many"):
            results = search.many(vectors, image_ids)
        else:
            results = [search(vector, image_id) for vector, image_id in zip(vectors, image_ids)]
        if results:
            search.view.verify(np.concatenate([found for found, _ in results]))
        return results
    results = featurestore.verified(plpy, GD, fn, answer)
    rows = []
    for image_id, (found, dist) in zip(image_ids, results):
        rows.extend((int(image_id), *row) for row in _rows(found, dist))
    return rows


def similar_to_image(plpy, GD, image, k=10, model=None, metric="cosine", source=None,
                     candidates=None, approximate=None):
    """Stored images most like new image bytes (features extracted on the fly)."""
    fn = FN_SIMILAR_IMAGE
    _validate(fn, k, metric, candidates)
    context = _context(plpy, GD, fn, model, source)
    query = np.asarray(extract.features_of(plpy, GD, fn, image, context[0]), dtype=np.float32)
    return _rows(*_search(plpy, GD, fn, context, query, k, metric, None, candidates,
                          approximate))


def similar_to_vector(plpy, GD, feature, k=10, model=None, metric="cosine", source=None,
                      candidates=None, approximate=None):
    """Stored images most like a feature vector computed elsewhere (another node of a
    sharded cluster, a client): rows (image_id, distance, rank)."""
    fn = FN_SIMILAR_VECTOR
    require_not_null(fn, "feature", feature)
    _validate(fn, k, metric, candidates)
    context = _context(plpy, GD, fn, model, source)
    model_row = context[0]
    require(fn, "feature", f"{len(feature)} values", len(feature) == model_row["dims"],
            f"{model_row['dims']} values (the dimension of model {model_row['name']!r})")
    require(fn, "feature", "NULL element", None not in feature, "an array without NULLs")
    query = np.asarray(feature, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(query))
    require(fn, "feature", f"{query[bad[0]]} at position {bad[0] + 1}" if len(bad) else None,
            not len(bad), "finite numbers (no NaN or Infinity)")
    return _rows(*_search(plpy, GD, fn, context, query, k, metric, None, candidates,
                          approximate))


def create_index(plpy, GD, source, model=None, metric="cosine", m=16, ef_construction=64,
                 ef_search=40, pca_dims=None, storage="float32"):
    """Build (or rebuild) the HNSW index of (model, source), store it in vision.indexes and
    vision.index_chunks, and map it for every backend of the server."""
    fn = FN_CREATE_INDEX
    require_not_null(fn, "source", source)
    require_choice(fn, "metric", metric, METRICS)
    require_int_range(fn, "m", m, 2, 128)
    require_int_range(fn, "ef_construction", ef_construction, 4, 4096)
    require_int_range(fn, "ef_search", ef_search, 1, 4096)
    require_choice(fn, "storage", storage, STORAGES)
    model_row = registry.lookup(plpy, GD, fn, model)
    if pca_dims is not None:
        require_int_range(fn, "pca_dims", pca_dims, 2, model_row["dims"])
    source = featurestore.resolve_source(plpy, GD, fn, model_row["name"], source)
    _require_index_owner(plpy, GD, fn, model_row["name"], source)
    view = _merged(plpy, GD, fn, model_row, source)
    n = len(view.snapshot.ids)
    require(fn, "source", source, n > (pca_dims or 0), "a table with more stored features "
            f"than pca_dims ({pca_dims})" if pca_dims else "a table with stored features")
    started = time.monotonic()
    index = build_index(view.snapshot.vectors, metric, m, ef_construction, pca_dims, storage)
    _store_index(plpy, GD, model_row, source, view.state["snap"], index,
                 np.asarray(view.snapshot.ids), np.zeros(n, bool),
                 time.monotonic() - started, dict(metric=metric, m=m,
                 ef_construction=ef_construction, ef_search=ef_search, pca_dims=pca_dims,
                 storage=storage))
    return n


def _merged(plpy, GD, fn, model_row, source):
    """The Live view after folding every change into a new shared snapshot (so an index
    built on it starts with nothing to search exactly)."""
    def checked():
        view = featurestore.live(plpy, GD, fn, model_row["name"], source, model_row["dims"])
        view.verify()  # an index is never built from a damaged row
        return view
    view = featurestore.verified(plpy, GD, fn, checked)
    if len(view.changed):
        current = featurestore.build_snapshot(plpy, GD, fn, model_row["name"], source,
                                              model_row["dims"], view.state, view)
        view = featurestore.live(plpy, GD, fn, model_row["name"], source, model_row["dims"],
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


def _store_index(plpy, GD, model_row, source, snap, index, entry_ids, dead, seconds, params):
    """Write the index file, its chunks and its row (replacing any previous one)."""
    model = model_row["name"]
    sha, size = _write_index(index)
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.indexes AS i (model, source, metric, m, ef_construction, ef_search,
            pca_dims, storage, dims, n, entries, snap, entry_ids, dead, sha256, size_bytes,
            build_seconds)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::pg_catalog.pg_snapshot, $13,
                $14, $15, $16, $17)
        ON CONFLICT (model, source) DO UPDATE SET metric = EXCLUDED.metric, m = EXCLUDED.m,
            ef_construction = EXCLUDED.ef_construction, ef_search = EXCLUDED.ef_search,
            pca_dims = EXCLUDED.pca_dims, storage = EXCLUDED.storage, dims = EXCLUDED.dims,
            n = EXCLUDED.n, entries = EXCLUDED.entries, snap = EXCLUDED.snap,
            entry_ids = EXCLUDED.entry_ids, dead = EXCLUDED.dead, sha256 = EXCLUDED.sha256,
            size_bytes = EXCLUDED.size_bytes, build_seconds = EXCLUDED.build_seconds,
            generation = pg_catalog.nextval('vision.index_generation_seq'),
            built_at = pg_catalog.clock_timestamp()""",
        ["text", "oid", "text", "int4", "int4", "int4", "int4", "text", "int4", "int8", "int8",
         "text", "bytea", "bytea", "text", "int8", "float8"]),
        [model, source, params["metric"], params["m"], params["ef_construction"],
         params["ef_search"], params["pca_dims"], params["storage"], model_row["dims"],
         int((~dead).sum()), len(entry_ids), snap, entry_ids.astype("<i8").tobytes(),
         np.packbits(dead, bitorder="little").tobytes(), sha, size, seconds])
    spi.write(plpy, GD, spi.plan(plpy, GD, "DELETE FROM vision.index_chunks "
                                 "WHERE model = $1 AND source = $2", ["text", "oid"]),
              [model, source])
    insert = spi.plan(plpy, GD, "INSERT INTO vision.index_chunks (model, source, part, data) "
                      "VALUES ($1, $2, $3, $4)", ["text", "oid", "int4", "bytea"])
    with open(store.path_of(sha, "faiss"), "rb") as fh:
        for part, data in enumerate(iter(lambda: fh.read(CHUNK_BYTES), b"")):
            spi.write(plpy, GD, insert, [model, source, part, data])
    featurestore.forget_changes(plpy, GD, model, source)
    GD.get(_INDEX_CACHE, {}).pop((model, source), None)
    featurestore.collect_garbage(plpy, GD)


def refresh_index(plpy, GD, source, model=None):
    """Bring an index up to date: fold the changes since its build in (new and changed
    vectors added, replaced and deleted entries marked dead), or rebuild when more than
    REBUILD_FRACTION of it is out of date: 'fresh', 'added N', 'removed M', 'added N, removed
    M' or 'rebuilt'."""
    fn = FN_REFRESH_INDEX
    require_not_null(fn, "source", source)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    model = model_row["name"]
    row = plpy.execute(spi.plan(plpy, GD, """
        SELECT metric, m, ef_construction, ef_search, pca_dims, storage, snap::text AS snap,
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
                                        "pca_dims", "storage")}
    # the snapshot the refreshed index will carry is taken before the changes are read, so
    # a change committed in between is both in the index and searched beside it, never lost
    snap = featurestore.current_snapshot(plpy, GD)
    changed, fresh = featurestore.changes_since(plpy, GD, fn, model, source, model_row["dims"],
                                                row["snap"])
    if not len(changed) and not row["foreign_snap"]:
        return "fresh"
    entry_ids, dead = _entries(row)
    now_dead = dead | np.isin(entry_ids, changed)
    path = None if row["foreign_snap"] else store.check(row["sha256"], "faiss")
    if path is None and not row["foreign_snap"] and _restore_index(plpy, GD, fn, model, source, row["sha256"], entry_ids,
                                       dead) is not None:
        path = store.check(row["sha256"], "faiss")
    started = time.monotonic()
    if path is not None and (now_dead.sum() + len(fresh.ids)
                             <= REBUILD_FRACTION * (len(entry_ids) + len(fresh.ids))):
        index = _faiss().read_index(path)  # a private, writable copy
        add_vectors(index, fresh.vectors, params["metric"])
        removed = int(now_dead.sum() - dead.sum())
        _store_index(plpy, GD, model_row, source, snap, index,
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
    index = build_index(view.snapshot.vectors, params["metric"], params["m"],
                        params["ef_construction"], params["pca_dims"], params["storage"])
    n = len(view.snapshot.ids)
    _store_index(plpy, GD, model_row, source, view.state["snap"], index,
                 np.asarray(view.snapshot.ids), np.zeros(n, bool),
                 time.monotonic() - started, params)
    return "rebuilt"


def refresh_neighbours(plpy, GD, source, model=None, k=10, metric="cosine"):
    """Materialise each image's k nearest neighbours into vision.neighbours, incrementally:
    new or changed images get a full search; other images merge in the new ones only;
    images that lost a neighbour (deleted or changed) are searched again."""
    fn = FN_NEIGHBOURS
    require_not_null(fn, "source", source)
    _validate(fn, k, metric)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    privileges.require_table_owner(plpy, GD, fn, source, "cached neighbour lists")
    model = model_row["name"]
    matrix = featurestore.load_for(plpy, GD, fn, model_row, source)
    existing = plpy.execute(spi.plan(plpy, GD, """
        SELECT n.image_id, n.k, n.metric, n.neighbour_ids, n.distances,
               (f.extracted_at > n.refreshed_at) AS changed
        FROM vision.neighbours n
        LEFT JOIN vision.features f USING (model, source, image_id)
        WHERE n.model = $1 AND n.source = $2""", ["text", "oid"]), [model, source])
    old = {r["image_id"]: r for r in existing if r["k"] == k and r["metric"] == metric
           and r["changed"] is False}
    present = set(matrix.ids.tolist())
    stale = {r["image_id"] for r in existing} - set(old)       # changed, gone, other k/metric
    fresh = present - set(old)                                  # new or changed: full search
    lost = stale | {i for i in old if i not in present}
    redo = fresh | {i for i, r in old.items()
                    if i in present and lost.intersection(r["neighbour_ids"])}
    delete = plpy.prepare("DELETE FROM vision.neighbours WHERE model = $1 AND source = $2 "
                          "AND image_id OPERATOR(pg_catalog.=) ANY($3)", ["text", "oid", "int8[]"])
    spi.write(plpy, GD, delete, [model, source, sorted(lost | redo)])
    upsert = plpy.prepare("""
        INSERT INTO vision.neighbours (model, source, image_id, k, metric, neighbour_ids,
                                       distances)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (model, source, image_id) DO UPDATE SET neighbour_ids = EXCLUDED.neighbour_ids,
            distances = EXCLUDED.distances, k = EXCLUDED.k, metric = EXCLUDED.metric,
            refreshed_at = pg_catalog.now()""",
        ["text", "oid", "int8", "int4", "text", "int8[]", "float4[]"])
    new_ids = np.array(sorted(fresh), dtype=np.int64)
    new_rows = matrix.positions(new_ids) if len(new_ids) else np.empty(0, np.int64)
    for image_id in sorted(redo):
        position = matrix.positions([image_id])[0]
        found, dist = exact(matrix, matrix.vectors[position], metric, k, exclude=image_id)
        spi.write(plpy, GD, upsert, [model, source, image_id, k, metric, found.tolist(),
                                     dist.tolist()])
    merged = 0
    if len(new_ids):
        for image_id, r in old.items():
            if image_id in redo or image_id not in present:
                continue
            position = matrix.positions([image_id])[0]
            dist_new = distances(matrix, matrix.vectors[position], metric, new_rows)
            ids = np.concatenate([np.array(r["neighbour_ids"], np.int64), new_ids])
            dist = np.concatenate([np.array(r["distances"], np.float32), dist_new])
            found, dist = top_k(ids, dist, k)
            if found.tolist() != list(r["neighbour_ids"]):
                spi.write(plpy, GD, upsert, [model, source, image_id, k, metric, found.tolist(),
                                      dist.tolist()])
                merged += 1
    return len(redo) + merged


FN_DROP_INDEX = "vision.drop_index"


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
    GD.get(_INDEX_CACHE, {}).pop((model_row["name"], source), None)
    return True
