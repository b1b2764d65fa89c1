"""The SQL functions of visual search: ``vision.similar`` (by stored image), ``similar_many``,
``similar_to_image`` (new bytes), ``similar_to_vector`` and the materialised neighbour lists
of ``vision.refresh_neighbours``.

A search reads what it needs in one query (:func:`pgvision.featurestore.context`), answers
from the live view of the features (:mod:`pgvision.snapshots`), exactly
(:mod:`pgvision.neighbours`) or through the table's HNSW index (:mod:`pgvision.ann`) with
images changed since the index searched exactly beside it, and answers only rows the
caller's SELECT on the source table returns (row-level security holds).
"""

import numpy as np

from . import ann, extract, featurestore, privileges, settings, snapshots, spi
from .errors import (DATATYPE_MISMATCH, UNDEFINED_OBJECT, PgvisionError, require,
                     require_choice, require_int_range, require_not_null)
from .neighbours import METRICS, distances, exact, exact_live, top_k

MAX_K = 10_000

FN_SIMILAR = "vision.similar"
FN_SIMILAR_IMAGE = "vision.similar_to_image"
FN_SIMILAR_MANY = "vision.similar_many"
FN_SIMILAR_VECTOR = "vision.similar_to_vector"
FN_NEIGHBOURS = "vision.refresh_neighbours"


def _validate(fn, k, metric, candidates=None):
    require_int_range(fn, "k", k, 1, MAX_K)
    require_choice(fn, "metric", metric, METRICS)
    if candidates is not None:
        require(fn, "candidates", "NULL element", None not in candidates,
                "an array of image ids without NULLs")


# Where row-level security hides rows, a search first asks for this many times k candidates
# divided by the share of candidates the caller saw last time (per table, in this backend):
# one round, one check, as a rule.
_SEEN_SHARE = "pgvision.seen_share"
_MARGIN = 1.5


def _searcher(plpy, GD, fn, model_row, source, current, k, metric, candidates, approximate):
    """``search(query, exclude) -> (ids, distances)`` over the state of :func:`_context`;
    ``search.view`` is the snapshots.Live view it searches; ``search.visible(ids)``
    the ids among ``ids`` that the caller may see (all of them, without row-level security).

    Where the source table's row-level security applies to the caller, the shared snapshot
    and index are searched for more candidates than k, as many times as needed, and only
    those the caller's SELECT returns are answered."""
    if current is None or not current["rls_active"]:
        column = None  # nothing stored, or nothing hidden from this caller
    else:
        column = featurestore.id_column(plpy, GD, source, current["version"])
    if column is None:
        search = _unfiltered(plpy, GD, fn, model_row, source, current, k, metric, candidates,
                             approximate)
        search.visible = lambda ids: np.asarray(ids, dtype=np.int64)
        return search
    shares = GD.setdefault(_SEEN_SHARE, {})
    view = snapshots.live(plpy, GD, fn, model_row["name"], source, model_row["dims"],
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
    view = snapshots.live(plpy, GD, fn, model, source, dims, current)

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
    index = ann.mapped(plpy, GD, fn, model, source, current)
    if index is None:
        return exact_search
    if current["index_method"] == "ivf":
        effort = settings.parse_setting("pgvision.probes", current["probes_setting"],
                                        current["index_probes"])
    else:
        effort = settings.parse_setting("pgvision.ef_search", current["ef_setting"],
                                        current["ef_search"])
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
    if not rerank:
        wanted = k + 1
    elif current["index_method"] == "ivf":
        # IVF lists hand over as many as asked: 100 re-ranked answered as exact search does
        # at 1M (make bench-serving)
        wanted = max(100, 4 * k + 1)
    else:
        wanted = max(effort, 2 * k + 1)  # an HNSW search holds ef candidates anyway

    def many(queries, excludes):
        out = []
        results = ann.ann(index.faiss, queries, metric, wanted, effort, alive, scores=True)
        for query, (entries, scores), exclude in zip(queries, results, excludes):
            ids = index.entry_ids[entries]
            if rerank:
                pool = view.vectors_of(ids)
                found, dist = top_k(pool.ids, distances(pool, query, metric), k + 1)
            else:
                found, dist = top_k(ids, ann.index_distance(scores, metric), k + 1)
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
    cache = GD.setdefault(ann.INDEX_CACHE + ".changes", {})
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
    return snapshots.verified(plpy, GD, fn, answer)


def _rows(found, dist):
    return [(int(i), float(d), rank) for rank, (i, d) in enumerate(zip(found, dist), start=1)]


def _missing(plpy, GD, fn, argument, model, source, ids):
    name = privileges.table_name(plpy, GD, source)
    what = (f"image {ids[0]} of {name} has" if len(ids) == 1 else
            f"{len(ids)} image(s) of {name} have")
    example = "" if len(ids) == 1 else f" (e.g. {ids[:5]})"
    return PgvisionError(fn, f'argument "{argument}": {what} no features for model '
                         f"{model!r}{example}", UNDEFINED_OBJECT,
                         hint="CALL vision.extract_table(...) extracts missing features; "
                         "CALL vision.maintain(source, add_model => ...) moves a table to "
                         "another model and keeps it current.")


def similar(plpy, GD, image_id, k=10, model=None, metric="cosine", source=None,
            candidates=None, approximate=None):
    """Images most like a stored image (itself excluded): rows (image_id, distance, rank)."""
    fn = FN_SIMILAR
    require_not_null(fn, "image_id", image_id)
    _validate(fn, k, metric, candidates)
    model_row, source, current = featurestore.context(plpy, GD, fn, model, source)

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
    return snapshots.verified(plpy, GD, fn, answer)


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
    model_row, source, current = featurestore.context(plpy, GD, fn, model, source)

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
    results = snapshots.verified(plpy, GD, fn, answer)
    rows = []
    for image_id, (found, dist) in zip(image_ids, results):
        rows.extend((int(image_id), *row) for row in _rows(found, dist))
    return rows


def similar_to_image(plpy, GD, image, k=10, model=None, metric="cosine", source=None,
                     candidates=None, approximate=None):
    """Stored images most like new image bytes (features extracted on the fly)."""
    fn = FN_SIMILAR_IMAGE
    _validate(fn, k, metric, candidates)
    context = featurestore.context(plpy, GD, fn, model, source)
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
    context = featurestore.context(plpy, GD, fn, model, source)
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
    matrix = snapshots.load_for(plpy, GD, fn, model_row, source)
    existing = plpy.execute(spi.plan(plpy, GD, """
        SELECT n.image_id, n.k, n.metric, n.neighbour_ids, n.distances,
               (f.extracted_at > n.refreshed_at) AS changed
        FROM vision.neighbours n
        LEFT JOIN vision.stored_features f USING (model, source, image_id)
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

