"""Visual search: exact k-NN over a cached feature matrix, an HNSW index stored in the
database (faiss), and a materialised top-k neighbours table.

Distances, smaller is closer: ``cosine`` = 1 − cos, ``l2`` = Euclidean, ``ip`` = −dot
(as pgvector's ``<#>``). Ties are broken by ascending image id, so results are deterministic.

Why faiss: manylinux wheels (no compiler), exact and HNSW indexes behind one API, PCA
pre-transforms, ID maps, filtered search and a byte serialisation to keep in a bytea.
"""

import hashlib
import os
import time

import numpy as np

from . import extract, featurestore, registry, spi
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


# --- HNSW index (faiss) -----------------------------------------------------------------

def _faiss():
    import faiss
    return faiss


def _prepare(vectors, metric):
    """Vectors as the index sees them: unit length for cosine."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)[:, None]
    return vectors


def build_index(ids, vectors, metric, m=16, ef_construction=64, pca_dims=None):
    """An ID-mapped HNSW index; with ``pca_dims`` vectors are PCA-reduced first (L2 there)."""
    faiss = _faiss()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    data = _prepare(vectors, metric)
    dims = data.shape[1]
    if pca_dims:
        hnsw = faiss.IndexHNSWFlat(pca_dims, m, faiss.METRIC_L2 if metric != "ip"
                                   else faiss.METRIC_INNER_PRODUCT)
        pca = faiss.PCAMatrix(dims, pca_dims)
        inner = faiss.IndexPreTransform(pca, hnsw)
    else:
        hnsw = faiss.IndexHNSWFlat(dims, m, faiss.METRIC_L2 if metric == "l2"
                                   else faiss.METRIC_INNER_PRODUCT)
        inner = hnsw
    hnsw.hnsw.efConstruction = ef_construction
    if pca_dims:
        inner.train(data)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(data, np.asarray(ids, dtype=np.int64))
    return index


def _hnsw_of(index):
    faiss = _faiss()
    inner = faiss.downcast_index(faiss.downcast_index(index).index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    return inner


def index_ids(index):
    faiss = _faiss()
    return faiss.vector_to_array(faiss.downcast_index(index).id_map)


def serialize(index):
    return _faiss().serialize_index(index).tobytes()


def deserialize(data):
    return _faiss().deserialize_index(np.frombuffer(data, dtype=np.uint8))


def ann(index, query, metric, k, ef_search, exclude=None):
    """Approximate candidates: (ids, raw faiss scores), best first."""
    # One query has nothing to split across threads; waking an OpenMP team costs more
    # than the search itself.
    _faiss().omp_set_num_threads(1)
    _hnsw_of(index).hnsw.efSearch = max(ef_search, k + 1)
    scores, found = index.search(_prepare(query[None, :], metric), k + (exclude is not None))
    keep = found[0] >= 0
    found, scores = found[0][keep], scores[0][keep]
    if exclude is not None:
        keep = found != exclude
        found, scores = found[keep], scores[keep]
    return found[:k], scores[:k]


def faiss_distance(scores, metric):
    """faiss scores of an un-reduced index → our distances."""
    if metric == "cosine":
        return 1.0 - scores
    if metric == "ip":
        return -scores
    return np.sqrt(np.maximum(scores, 0.0))


# --- SQL-facing -------------------------------------------------------------------------

def _validate(fn, k, metric, candidates=None):
    require_int_range(fn, "k", k, 1, MAX_K)
    require_choice(fn, "metric", metric, METRICS)
    if candidates is not None:
        require(fn, "candidates", "NULL element", None not in candidates,
                "an array of image ids without NULLs")


def _index_row(plpy, GD, model, source):
    """The index's row with the features' current version and the ef_search setting, in one
    query (this runs on every search); None without an index."""
    rows = plpy.execute(spi.plan(plpy, GD, """
        SELECT i.metric, i.ef_search, i.pca_dims, i.dims, i.built_version, i.sha256,
               coalesce(v.version, 0) AS current_version,
               pg_catalog.current_setting('pgvision.ef_search', true) AS ef_setting
        FROM vision.indexes i
        LEFT JOIN vision.feature_versions v USING (model, source)
        WHERE i.model = $1 AND i.source = $2""", ["text", "oid"]), [model, source])
    if not rows:
        return None
    row = dict(rows[0])
    row["ef_search"] = spi.parse_setting("pgvision.ef_search", row["ef_setting"],
                                            row["ef_search"])
    return row


def _load_index(plpy, GD, fn, model, source, row):
    """The deserialised index, cached by checksum; None (with a WARNING) when corrupted."""
    cache = GD.setdefault(_INDEX_CACHE, {})
    hit = cache.get((model, source))
    if hit is not None and hit[0] == row["sha256"]:
        return hit[1]
    data = plpy.execute(spi.plan(plpy, GD, "SELECT index_bytes FROM vision.indexes "
                                    "WHERE model = $1 AND source = $2", ["text", "oid"]),
                        [model, source])[0]["index_bytes"]
    data = bytes(data)
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        plpy.warning(f"{fn}: the stored index of model {model!r} is corrupted (checksum "
                     "mismatch); using exact search. Rebuild it with vision.create_index.")
        return None
    try:
        index = deserialize(data)
    except RuntimeError as err:
        plpy.warning(f"{fn}: the stored index of model {model!r} cannot be read ({err}); "
                     "using exact search")
        return None
    cache[(model, source)] = (row["sha256"], index)
    return index


def _searcher(plpy, GD, fn, model_row, source, k, metric, candidates, approximate):
    """``search(query, exclude) -> (ids, distances)``, with the index state read once."""
    model, dims = model_row["name"], model_row["dims"]
    if candidates is None:
        index_row = _index_row(plpy, GD, model, source)
        usable = (index_row is not None and index_row["metric"] == metric
                  and index_row["built_version"] == index_row["current_version"])
        if approximate and not usable:
            reason = ("no index" if index_row is None else
                      f"the index is for metric {index_row['metric']!r}"
                      if index_row["metric"] != metric else "the index is stale")
            plpy.notice(f"{fn}: {reason} for model {model!r}; using exact search "
                        "(vision.create_index / vision.refresh_index)")
        if usable and approximate is not False:
            if index_row["dims"] != dims:
                raise PgvisionError(fn, f"the index of model {model!r} has {index_row['dims']} "
                                    f"dimensions but the model has {dims}", DATATYPE_MISMATCH,
                                    hint="Rebuild it with vision.create_index.")
            index = _load_index(plpy, GD, fn, model, source, index_row)
            if index is not None:
                ef = index_row["ef_search"]
                if index_row["pca_dims"]:
                    def rerank(query, exclude):
                        found, _ = ann(index, query, metric, 4 * k, max(ef, 4 * k), exclude)
                        # PCA distances are approximate: re-rank the candidates exactly
                        subset = featurestore.fetch(plpy, GD, model, source, found, dims)
                        return top_k(subset.ids, distances(subset, query, metric), k)
                    return rerank

                def approximate_search(query, exclude):
                    found, scores = ann(index, query, metric, k, ef, exclude)
                    return found, faiss_distance(scores, metric)

                def many(queries, excludes):
                    """All queries in one faiss call (no Python work per query)."""
                    _faiss().omp_set_num_threads(1)
                    _hnsw_of(index).hnsw.efSearch = max(ef, k + 1)
                    scores, found = index.search(_prepare(queries, metric), k + 1)
                    out = []
                    for ids, raw, exclude in zip(found, scores, excludes):
                        keep = (ids >= 0) & (ids != exclude)
                        out.append((ids[keep][:k], faiss_distance(raw[keep][:k], metric)))
                    return out
                approximate_search.many = many
                return approximate_search
    matrix = featurestore.load(plpy, GD, fn, model, source, dims)
    return lambda query, exclude: exact(matrix, query, metric, k, exclude, candidates)


def _search(plpy, GD, fn, model_row, source, query, k, metric, exclude, candidates, approximate):
    return _searcher(plpy, GD, fn, model_row, source, k, metric, candidates,
                     approximate)(query, exclude)


def _rows(found, dist):
    return [(int(i), float(d), rank) for rank, (i, d) in enumerate(zip(found, dist), start=1)]


def similar(plpy, GD, image_id, k=10, model=None, metric="cosine", source=None,
            candidates=None, approximate=None):
    """Images most like a stored image (itself excluded): rows (image_id, distance, rank)."""
    fn = FN_SIMILAR
    require_not_null(fn, "image_id", image_id)
    _validate(fn, k, metric, candidates)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    rows = plpy.execute(spi.plan(plpy, GD, "SELECT pg_catalog.array_send(feature) AS f "
                                 "FROM vision.features "
                                 "WHERE model = $1 AND source = $2 AND image_id = $3",
                                 ["text", "oid", "int8"]), [model_row["name"], source, image_id])
    if not rows:
        name = featurestore.table_name(plpy, GD, source)
        raise PgvisionError(fn, f'argument "image_id": image {image_id} of {name} has no '
                            f"features for model {model_row['name']!r}", UNDEFINED_OBJECT,
                            hint="CALL vision.extract_table(...) extracts missing features.")
    query = featurestore.decode_array(rows[0]["f"], model_row["dims"])
    return _rows(*_search(plpy, GD, fn, model_row, source, query, k, metric, image_id,
                          candidates, approximate))


def similar_many(plpy, GD, image_ids, k=10, model=None, metric="cosine", source=None,
                 approximate=None):
    """vision.similar for many stored images in one call (one catalog lookup, one read of
    the query vectors): rows (query_id, image_id, distance, rank)."""
    fn = FN_SIMILAR_MANY
    require_not_null(fn, "image_ids", image_ids)
    require(fn, "image_ids", f"{len(image_ids)} ids", 1 <= len(image_ids) <= 100_000,
            "an array of 1 to 100000 image ids")
    require(fn, "image_ids", "NULL element", None not in image_ids, "an array without NULLs")
    _validate(fn, k, metric)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    queries = featurestore.fetch(plpy, GD, model_row["name"], source, sorted(set(image_ids)),
                                 model_row["dims"])
    missing = sorted(set(image_ids) - set(queries.ids.tolist()))
    if missing:
        raise PgvisionError(fn, f'argument "image_ids": {len(missing)} image(s) have no features '
                            f"for model {model_row['name']!r} (e.g. {missing[:5]})",
                            UNDEFINED_OBJECT)
    search = _searcher(plpy, GD, fn, model_row, source, k, metric, None, approximate)
    vectors = queries.vectors[queries.positions(image_ids)]
    if hasattr(search, "many"):
        results = search.many(vectors, image_ids)
    else:
        results = [search(vector, image_id) for vector, image_id in zip(vectors, image_ids)]
    rows = []
    for image_id, (found, dist) in zip(image_ids, results):
        rows.extend((int(image_id), *row) for row in _rows(found, dist))
    return rows


def similar_to_image(plpy, GD, image, k=10, model=None, metric="cosine", source=None,
                     candidates=None, approximate=None):
    """Stored images most like new image bytes (features extracted on the fly)."""
    fn = FN_SIMILAR_IMAGE
    _validate(fn, k, metric, candidates)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    query = np.asarray(extract.features_of(plpy, GD, fn, image, model_row), dtype=np.float32)
    return _rows(*_search(plpy, GD, fn, model_row, source, query, k, metric, None, candidates,
                          approximate))


def similar_to_vector(plpy, GD, feature, k=10, model=None, metric="cosine", source=None,
                      candidates=None, approximate=None):
    """Stored images most like a feature vector computed elsewhere (another node of a
    sharded cluster, a client): rows (image_id, distance, rank)."""
    fn = FN_SIMILAR_VECTOR
    require_not_null(fn, "feature", feature)
    _validate(fn, k, metric, candidates)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    require(fn, "feature", f"{len(feature)} values", len(feature) == model_row["dims"],
            f"{model_row['dims']} values (the dimension of model {model_row['name']!r})")
    require(fn, "feature", "NULL element", None not in feature, "an array without NULLs")
    query = np.asarray(feature, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(query))
    require(fn, "feature", f"{query[bad[0]]} at position {bad[0] + 1}" if len(bad) else None,
            not len(bad), "finite numbers (no NaN or Infinity)")
    return _rows(*_search(plpy, GD, fn, model_row, source, query, k, metric, None, candidates,
                          approximate))


def create_index(plpy, GD, source, model=None, metric="cosine", m=16, ef_construction=64,
                 ef_search=40, pca_dims=None):
    """Build (or rebuild) the HNSW index of (model, source) and store it in vision.indexes."""
    fn = FN_CREATE_INDEX
    require_not_null(fn, "source", source)
    require_choice(fn, "metric", metric, METRICS)
    require_int_range(fn, "m", m, 2, 128)
    require_int_range(fn, "ef_construction", ef_construction, 4, 4096)
    require_int_range(fn, "ef_search", ef_search, 1, 4096)
    model_row = registry.lookup(plpy, GD, fn, model)
    if pca_dims is not None:
        require_int_range(fn, "pca_dims", pca_dims, 2, model_row["dims"])
    source = featurestore.resolve_source(plpy, GD, fn, model_row["name"], source)
    return _build_and_store(plpy, GD, fn, model_row, source, metric, m, ef_construction,
                            ef_search, pca_dims)


def _require_index_owner(plpy, GD, fn, model, source):
    """Refuse unless the caller owns the index of (model, source), if there is one (or is
    vision_admin); whether there is one."""
    existing = plpy.execute(spi.plan(plpy, GD, "SELECT owner FROM vision.indexes "
                                     "WHERE model = $1 AND source = $2", ["text", "oid"]),
                            [model, source])
    if existing:
        spi.require_owner(plpy, GD, fn, f"the index of model {model!r} on "
                          f"{featurestore.table_name(plpy, GD, source)}", existing[0]["owner"])
    return bool(existing)


def _build_and_store(plpy, GD, fn, model_row, source, metric, m, ef_construction, ef_search,
                     pca_dims, base=None, added=None):
    model = model_row["name"]
    _require_index_owner(plpy, GD, fn, model, source)
    matrix = featurestore.load_for(plpy, GD, fn, model_row, source)
    built_version = featurestore.version(plpy, GD, model, source)
    require(fn, "source", source, len(matrix.ids) > (pca_dims or 0), "a table with more stored "
            f"features than pca_dims ({pca_dims})" if pca_dims else "a table with stored features")
    started = time.monotonic()
    if base is not None:
        positions = matrix.positions(added)
        base.add_with_ids(_prepare(matrix.vectors[positions], metric), matrix.ids[positions])
        index = base
    else:
        index = build_index(matrix.ids, matrix.vectors, metric, m, ef_construction, pca_dims)
    seconds = time.monotonic() - started
    data = serialize(index)
    digest = hashlib.sha256(data).hexdigest()
    spi.write(plpy, GD, spi.plan(plpy, GD, """
        INSERT INTO vision.indexes AS i (model, source, metric, m, ef_construction, ef_search,
            pca_dims, dims, n, built_version, index_bytes, sha256, build_seconds)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        ON CONFLICT (model, source) DO UPDATE SET metric = EXCLUDED.metric, m = EXCLUDED.m,
            ef_construction = EXCLUDED.ef_construction, ef_search = EXCLUDED.ef_search,
            pca_dims = EXCLUDED.pca_dims, dims = EXCLUDED.dims, n = EXCLUDED.n,
            built_version = EXCLUDED.built_version, index_bytes = EXCLUDED.index_bytes,
            sha256 = EXCLUDED.sha256, build_seconds = EXCLUDED.build_seconds,
            built_at = pg_catalog.now()""",
        ["text", "oid", "text", "int4", "int4", "int4", "int4", "int4", "int8", "int8", "bytea",
         "text", "float8"]),
        [model, source, metric, m, ef_construction, ef_search, pca_dims, model_row["dims"],
         len(matrix.ids), built_version, data, digest, seconds])
    GD.setdefault(_INDEX_CACHE, {})[(model, source)] = (digest, index)
    return len(matrix.ids)


def refresh_index(plpy, GD, source, model=None):
    """Bring an index up to date: add new images, or rebuild when images changed or went."""
    fn = FN_REFRESH_INDEX
    require_not_null(fn, "source", source)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
    model = model_row["name"]
    row = plpy.execute(spi.plan(plpy, GD, """
        SELECT metric, m, ef_construction, ef_search, pca_dims, built_version, sha256
        FROM vision.indexes WHERE model = $1 AND source = $2""", ["text", "oid"]),
        [model, source])
    if not row:
        raise PgvisionError(fn, f"model {model!r} has no index on this table", UNDEFINED_OBJECT,
                            hint="Create one with vision.create_index.")
    row = dict(row[0])
    if row["built_version"] == featurestore.version(plpy, GD, model, source):
        return "fresh"
    params = (row["metric"], row["m"], row["ef_construction"], row["ef_search"], row["pca_dims"])
    index = _load_index(plpy, GD, fn, model, source, row)
    changed = plpy.execute(spi.plan(plpy, GD, """
        SELECT pg_catalog.count(*) AS n FROM vision.features f JOIN vision.indexes i USING (model, source)
        WHERE f.model = $1 AND f.source = $2 AND f.extracted_at > i.built_at""",
        ["text", "oid"]), [model, source])[0]["n"]
    matrix = featurestore.load_for(plpy, GD, fn, model_row, source)
    reason = "the stored index could not be read"
    if index is not None:
        indexed = index_ids(index)
        added = np.setdiff1d(matrix.ids, indexed)
        gone = np.setdiff1d(indexed, matrix.ids)
        if len(gone) == 0 and changed == len(added):
            _build_and_store(plpy, GD, fn, model_row, source, *params,
                             base=index, added=added)
            return f"added {len(added)}"
        reason = (f"{len(gone)} indexed image(s) deleted and {changed - len(added)} changed "
                  "since the build (faiss HNSW cannot remove vectors)")
    plpy.notice(f"{fn}: rebuilding the index of model {model!r}: {reason}")
    _build_and_store(plpy, GD, fn, model_row, source, *params)
    return "rebuilt"


def refresh_neighbours(plpy, GD, source, model=None, k=10, metric="cosine"):
    """Materialise each image's k nearest neighbours into vision.neighbours, incrementally:
    new or changed images get a full search; other images merge in the new ones only;
    images that lost a neighbour (deleted or changed) are searched again."""
    fn = FN_NEIGHBOURS
    require_not_null(fn, "source", source)
    _validate(fn, k, metric)
    model_row, source = featurestore.model_and_source(plpy, GD, fn, model, source)
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
    spi.write(plpy, GD, spi.plan(plpy, GD, "DELETE FROM vision.indexes WHERE model = $1 "
                                 "AND source = $2", ["text", "oid"]), [model_row["name"], source])
    GD.get(_INDEX_CACHE, {}).pop((model_row["name"], source), None)
    return True
