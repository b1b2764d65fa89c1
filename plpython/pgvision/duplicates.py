"""Near-duplicates: the same product photographed twice, re-encoded, resized, slightly cropped
or mirrored by a reseller.

Three kinds of evidence, all stored per image and kept current like features:

- the perceptual hash of the image and of its mirror (model ``perceptual_hash``, see
  :mod:`pgvision.hashing`): pairs within ``max_hash_distance`` bits are found through a
  multi-index hashing binary index (faiss), not a scan per image;
- the CNN features of ``model``: each image's nearest neighbours (a PCA projection searched
  exactly, then the full vectors compared); with grid pooling the mirrored image's vector is
  the same vector with its left and right cells swapped, so a mirrored copy is compared as
  if it were not mirrored;
- the colour histogram the hash model stores: a near-duplicate has the colours of the
  original, a similar-looking other photo often does not.

A pair's *similarity* weighs the three: ``(4 * cosine + 2 * colour overlap + hash agreement)
/ 7``, where hash agreement is ``1 - hash distance / 32`` (0 for unrelated hashes, which
differ in 32 of 64 bits on average). A pair is a near-duplicate when its similarity is at
least ``min_similarity``, or when its hashes are within ``max_hash_distance`` bits and the
features do not contradict them (similarity at least ``min_similarity - HASH_MARGIN``).
Groups are the connected pairs; each group's representative is its first image (lowest id).
The defaults come from ``make bench-duplicates`` (docs/duplicates.md).

    >>> import numpy as np
    >>> bits = np.zeros((3, 177), np.float32)
    >>> bits[2, :128] = 1  # image 3's hashes differ from the others' in every bit
    >>> bits[:, 128:] = 1 / 49
    >>> [g.tolist() for g in groups_of(np.array([1, 2, 3]), bits, None, False, 8, 0.82)[0]]
    [[1, 2]]
"""

import numpy as np

from . import (DEFAULT_MODEL, extract, featurestore, hashing, learners, privileges, registry,
               settings, snapshots, spi)
from .errors import (UNDEFINED_OBJECT, PgvisionError, require, require_int_range,
                     require_not_null)

FN = "vision.duplicates"
FN_OF = "vision.duplicates_of"
MAX_HASH_DISTANCE = 7
MULTI_HASH_RADIUS = 7  # four 16-bit tables, one flipped bit each: exact up to 7 bits
MIN_SIMILARITY = 0.82
HASH_UNRELATED = 32.0  # bits two unrelated 64-bit hashes differ in, on average
HASH_MARGIN = 0.10  # how far below min_similarity a hash match may still be confirmed
NEIGHBOURS = 10
PCA_DIMS = 64  # the candidate search's projection: 100k images in seconds
PCA_SAMPLE = 5_000
EXACT_CANDIDATES = 20_000  # up to this many images the projection is searched exhaustively
BLOCK = 4096
PAIR_BLOCK = 1024  # pairs whose vectors are compared at once: 3,840-d rows, ~16 MB a side
# What grouping holds beyond the mapped snapshots: the PCA sample, then per image the
# projections, the HNSW graph and the split hashes, and per candidate pair its ids (sorted,
# de-duplicated) and evidence. Measured peak growth, 3,840-d features and 10 neighbours (22
# candidates an image): 260 MB at 50,000 images, 406 MB at 100,000, i.e. ~110 MB + 3.1 KB
# an image; this bound says 128 MB + 3.2 KB.
FIXED_MB, BYTES_PER_IMAGE, BYTES_PER_CANDIDATE = 128, 1000, 100
GRID_MIRROR = [0, 2, 1, 4, 3]  # global, top-left, top-right, bottom-left, bottom-right
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


# --- evidence, pure numpy ---------------------------------------------------------------

def hamming(a, b):
    """Bit differences between packed rows ``a`` and ``b`` (same shape (n, bytes))."""
    return _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=1, dtype=np.int32)


def mirrors(dims, pooling):
    """Whether a model's vectors can be mirrored (:func:`mirrored`): grid pooling's can (the
    global cell stays, the 2x2 cells swap left and right); global poolings' need not, a
    mirror changes them little."""
    return pooling == "grid" and dims % 5 == 0


def mirrored(rows):
    """Grid vectors of the mirrored images: left and right cells swapped, whole cells moved.
    Its own inverse, so ``mirrored(a) @ b == a @ mirrored(b)``."""
    return rows.reshape(len(rows), 5, -1)[:, GRID_MIRROR].reshape(len(rows), -1)


def hash_pairs(hashes, mirror_hashes, radius):
    """Pairs ``(i, j)``, ``i < j``, whose hashes (or one's hash and the other's mirrored hash)
    differ in at most ``radius`` bits, all of them. Up to ``MULTI_HASH_RADIUS`` bits through
    multi-index hashing (faiss IndexBinaryMultiHash: four 16-bit tables probed with one bit
    flipped, so by the pigeonhole principle no pair within 7 bits is missed, and a query
    looks at a few hundred images, not all); beyond, an exhaustive binary scan (exact,
    quadratic: seconds at 100,000 images)."""
    import faiss

    n, nbytes = hashes.shape
    if n < 2:
        return np.empty((0, 2), np.int64)
    bits = nbytes * 8
    if radius <= MULTI_HASH_RADIUS and bits == 64:
        index = faiss.IndexBinaryMultiHash(bits, 4, 16)
        index.nflip = 1
    else:
        index = faiss.IndexBinaryFlat(bits)
    index.add(np.ascontiguousarray(hashes))
    found = []
    for queries in (hashes, mirror_hashes):
        lims, _, ids = index.range_search(np.ascontiguousarray(queries), radius + 1)  # < radius+1
        rows = np.repeat(np.arange(n), np.diff(lims).astype(np.int64))
        found.append(np.stack([rows, ids.astype(np.int64)], axis=1))
    return _ordered(np.concatenate(found))


def _ordered(pairs):
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(np.sort(pairs, axis=1), axis=0)


def feature_pairs(vectors, mirror, k):
    """Pairs ``(i, j)``, ``i < j``, where j is among i's ``k`` nearest neighbours (or its
    mirror's) in a 64-d PCA projection of the unit vectors (searched exhaustively up to
    ``EXACT_CANDIDATES`` images, by HNSW beyond): candidates only, confirmed on the full
    vectors by :func:`evidence`."""
    import faiss

    n = len(vectors)
    if n < 2:
        return np.empty((0, 2), np.int64)
    k = min(k + 1, n)
    dims = min(PCA_DIMS, n, vectors.shape[1])
    sample = np.random.default_rng(0).choice(n, min(n, PCA_SAMPLE), replace=False)
    mean, components = _pca(learners.unit(vectors[np.sort(sample)]), dims)

    def projected(flip):
        out = np.empty((n, dims), np.float32)
        for start in range(0, n, BLOCK):
            block = vectors[start:start + BLOCK]
            block = learners.unit(mirrored(block) if flip else block)
            out[start:start + BLOCK] = learners.unit((block - mean) @ components.T)
        return out

    base = projected(False)
    if n <= EXACT_CANDIDATES:
        index = faiss.IndexFlatIP(dims)
    else:  # HNSW: 100k images in seconds, ~98% of the exhaustive top-k in this projection
        index = faiss.IndexHNSWFlat(dims, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = 64
    index.add(base)
    found = []
    for queries in (base, projected(True)) if mirror else (base,):
        _, ids = index.search(queries, k)
        rows = np.repeat(np.arange(n), k)
        pairs = np.stack([rows, ids.ravel().astype(np.int64)], axis=1)
        found.append(pairs[pairs[:, 1] >= 0])
    return _ordered(np.concatenate(found))


def _norms(vectors, rows=None):
    """Lengths of ``vectors`` (of ``rows`` only, the others 0), a block at a time: no
    temporary as large as the (mapped) matrix."""
    out = np.zeros(len(vectors), np.float32)
    rows = np.arange(len(vectors)) if rows is None else rows
    for start in range(0, len(rows), PAIR_BLOCK):
        block = rows[start:start + PAIR_BLOCK]
        out[block] = np.linalg.norm(vectors[block], axis=1)
    return out


def _pca(rows, dims):
    """Mean and top ``dims`` principal axes of ``rows`` (randomized SVD: a 5,000 x 3,840
    sample in a second, where a full SVD takes ~40 s)."""
    from sklearn.utils.extmath import randomized_svd

    mean = rows.mean(axis=0)
    _, _, vt = randomized_svd(rows - mean, dims, n_iter=4, random_state=0)
    return mean.astype(np.float32), vt.astype(np.float32)


def _dots(a, b, mirror):
    """Row-wise dot products of ``a`` and ``b``, the larger of it and that with ``b``
    mirrored when ``mirror``."""
    plain = np.einsum("ij,ij->i", a, b)
    return np.maximum(plain, np.einsum("ij,ij->i", a, mirrored(b))) if mirror else plain


def reachable(distance, colour, max_hash_distance, min_similarity):
    """Pairs that a cosine of 1 could make near-duplicates: only these need their features
    compared (most candidate pairs differ in hash and colour too much for any cosine)."""
    best = similarity(distance, np.ones(len(distance), np.float32), colour)
    return best >= min_similarity - np.where(distance <= max_hash_distance, HASH_MARGIN, 0.0)


def evidence(pairs, parts, vectors, mirror, norms=None, needed=None):
    """Per pair: hash distance (the smaller of plain and mirrored), cosine (the larger of
    plain and mirrored; NaN without features, -1 where ``needed`` says it cannot matter) and
    colour overlap (histogram intersection). ``parts``: :func:`pgvision.hashing.split` of the
    hash vectors; ``mirror``: whether the vectors mirror (:func:`mirrors`); ``needed(distance,
    colour)``: which pairs to compare features of (all when None); ``norms``: the vectors'
    lengths, when known. A block of pairs at a time, so
    millions of pairs hold little memory."""
    hashes, mirror_hashes, colours = parts
    i, j = pairs[:, 0], pairs[:, 1]
    distance = np.empty(len(pairs), np.int32)
    colour = np.empty(len(pairs), np.float32)
    for start in range(0, len(pairs), BLOCK):
        a, b = i[start:start + BLOCK], j[start:start + BLOCK]
        distance[start:start + BLOCK] = np.minimum(hamming(hashes[a], hashes[b]),
                                                   hamming(hashes[a], mirror_hashes[b]))
        colour[start:start + BLOCK] = np.minimum(colours[a], colours[b]).sum(axis=1)
    cosine = np.full(len(pairs), np.nan, np.float32)
    if vectors is None:
        return distance, cosine, colour
    if norms is None:
        norms = _norms(vectors, np.unique(pairs))
    todo = np.arange(len(pairs)) if needed is None else np.flatnonzero(needed(distance, colour))
    cosine[:] = -1.0
    for start in range(0, len(todo), PAIR_BLOCK):
        k = todo[start:start + PAIR_BLOCK]
        plain = _dots(vectors[i[k]], vectors[j[k]], mirror)
        scale = np.maximum(norms[i[k]] * norms[j[k]], 1e-12)
        cosine[k] = np.minimum(plain / scale, 1.0)
    return distance, cosine, colour


def evidence_of(query_hash, hash_vectors, query_vector, vectors, mirror):
    """:func:`evidence` of one new image against every stored one (no copy of ``vectors``:
    a mirrored vector's dot product is that with the mirrored query)."""
    hashes, mirror_hashes, colours = hashing.split(hash_vectors)
    q_hash, _, q_colour = hashing.split(query_hash[np.newaxis])
    distance = np.minimum(hamming(hashes, q_hash), hamming(mirror_hashes, q_hash))
    colour = np.minimum(colours, q_colour).sum(axis=1)
    cosine = np.full(len(hashes), np.nan, np.float32)
    if vectors is not None:
        q = query_vector / max(float(np.linalg.norm(query_vector)), 1e-12)
        norms = np.maximum(_norms(vectors), 1e-12)
        cosine = vectors @ q / norms
        if mirror:
            cosine = np.maximum(cosine, vectors @ mirrored(q[np.newaxis])[0] / norms)
        cosine = np.minimum(cosine, 1.0)
    return distance, cosine, colour


def similarity(distance, cosine, colour):
    """``(4 * cosine + 2 * colour overlap + hash agreement) / 7``: 1 for the same image; NaN
    without features. Grey images share their colour histograms and ImageNet features rate
    textures alike; the hash, which a crop or rotation moves only part of the way to
    unrelated, keeps such pairs apart (make bench-duplicates)."""
    agreement = np.clip(1.0 - np.asarray(distance, np.float32) / HASH_UNRELATED, 0.0, 1.0)
    return (4.0 * cosine + 2.0 * colour + agreement) / 7.0


def is_duplicate(distance, sim, max_hash_distance, min_similarity):
    """The decision rule of the module docstring (hashes alone decide without features)."""
    sim = np.asarray(sim, dtype=np.float64)
    no_features = np.isnan(sim)
    by_hash = (distance <= max_hash_distance) & (
        no_features | (np.nan_to_num(sim, nan=-1) >= min_similarity - HASH_MARGIN))
    return by_hash | (np.nan_to_num(sim, nan=-1) >= min_similarity)


def groups_of(ids, hash_vectors, vectors, mirror, max_hash_distance, min_similarity,
              neighbours=NEIGHBOURS):
    """Near-duplicate groups among images ``ids`` (ascending) with their ``hash_vectors`` and
    CNN ``vectors`` (same rows; None: hashes alone; ``mirror``: see :func:`mirrors`). Returns ``(groups, pairs)``: the groups
    as arrays of ids (each ascending, largest group first) and the number of candidate pairs
    compared."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    parts = hashing.split(hash_vectors)
    pairs = hash_pairs(parts[0], parts[1], max_hash_distance)
    if vectors is not None:
        pairs = _ordered(np.concatenate([pairs, feature_pairs(vectors, mirror, neighbours)]))
    norms = None if vectors is None else _norms(vectors)
    distance, cosine, colour = evidence(
        pairs, parts, vectors, mirror, norms,
        lambda d, c: reachable(d, c, max_hash_distance, min_similarity))
    keep = is_duplicate(distance, similarity(distance, cosine, colour), max_hash_distance,
                        min_similarity)
    linked = pairs[keep]
    n = len(ids)
    graph = coo_matrix((np.ones(len(linked)), (linked[:, 0], linked[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    sizes = np.bincount(label)
    found = [ids[label == c] for c in np.flatnonzero(sizes > 1)]
    found.sort(key=lambda g: (-len(g), g[0]))
    return found, len(pairs)


# --- the SQL functions ------------------------------------------------------------------

def _check(fn, max_hash_distance, min_similarity, neighbours=NEIGHBOURS):
    require_int_range(fn, "max_hash_distance", max_hash_distance, 0, 32)
    require_not_null(fn, "min_similarity", min_similarity)
    require(fn, "min_similarity", min_similarity, 0.0 < min_similarity <= 1.0,
            "a number in (0, 1]")
    require_int_range(fn, "neighbours", neighbours, 1, 100)


def _stored(plpy, GD, fn, row, source, argument, hint):
    """The caller's view of ``row``'s features of ``source`` (row-level security applied)."""
    matrix = snapshots.load_for(plpy, GD, fn, row, source)
    if not len(matrix.ids):
        raise PgvisionError(fn, f'argument "{argument}": table '
                            f"{privileges.table_name(plpy, GD, source)} has no "
                            f"{row['name']} features (none you may read)", UNDEFINED_OBJECT,
                            hint=hint)
    return matrix


def _hint(plpy, GD, source, model):
    table = privileges.table_name(plpy, GD, source)
    return (f"CALL vision.extract_table({plpy.quote_literal(table)}, model => "
            f"{plpy.quote_literal(model)}) makes them once; vision.maintain keeps them current.")


def _inputs(plpy, GD, fn, source, model):
    """(source OID, ids, hash vectors, CNN vectors or None, whether they mirror) of the
    images both kinds of evidence cover, as the caller may read them."""
    require_not_null(fn, "source", source)
    require(fn, "model", model, model != hashing.MODEL,
            "a network whose features confirm the hashes (NULL: the hashes alone)")
    hash_row = registry.lookup(plpy, GD, fn, hashing.MODEL)
    source = featurestore.resolve_source(plpy, GD, fn, hashing.MODEL, source)
    hashes = _stored(plpy, GD, fn, hash_row, source, "source",
                     _hint(plpy, GD, source, hashing.MODEL))
    if model is None:
        return source, hashes.ids, hashes.vectors, None, False
    row = registry.lookup(plpy, GD, fn, model)
    features = _stored(plpy, GD, fn, row, source, "model", _hint(plpy, GD, source, model))
    ids = np.intersect1d(hashes.ids, features.ids)
    left_out = len(hashes.ids) + len(features.ids) - 2 * len(ids)
    if left_out:
        plpy.notice(f"{fn}: {left_out} images have only one of {hashing.MODEL} and {model} "
                    "features and are left out; CALL vision.maintain(source) fills them in")
    return (source, ids, _rows(hashes, ids), _rows(features, ids),
            mirrors(row["dims"], row["pooling"]))


def _rows(matrix, ids):
    """``matrix``'s vectors of ``ids``: the (mapped) matrix itself when that is all of them,
    so a large snapshot is not copied."""
    if len(ids) == len(matrix.ids):
        return matrix.vectors
    return matrix.vectors[matrix.positions(ids)]


def duplicates(plpy, GD, source, model=DEFAULT_MODEL, max_hash_distance=MAX_HASH_DISTANCE,
               min_similarity=MIN_SIMILARITY, neighbours=NEIGHBOURS):
    """Rows (group_id, image_id, representative, hash_distance, cosine, similarity): every
    image of a near-duplicate group, the evidence measured against its representative."""
    fn = FN
    _check(fn, max_hash_distance, min_similarity, neighbours)
    with spi.pinned_search_path(plpy):
        source, ids, hash_vectors, vectors, mirror = _inputs(plpy, GD, fn, source, model)
        settings.require_within_limit(plpy, GD, fn, f"working memory of {len(ids)} images (MB)",
                                      working_mb(len(ids), vectors is not None, neighbours),
                                      "pgvision.max_batch_memory_mb")
        found, compared = groups_of(ids, hash_vectors, vectors, mirror,
                                    max_hash_distance, min_similarity, neighbours)
        settings.require_within_limit(plpy, GD, fn, "rows (images in groups)",
                                      sum(len(g) for g in found), "pgvision.max_result_rows")
    plpy.notice(f"{fn}: {len(ids)} images, {compared} candidate pairs compared, "
                f"{len(found)} groups of near-duplicates")
    # each member against its group's representative, all groups in one pass
    where = [np.searchsorted(ids, members) for members in found]
    pairs = np.stack([np.concatenate([np.full(len(w), w[0]) for w in where]),
                      np.concatenate(where)], axis=1) if found else np.empty((0, 2), np.int64)
    distance, cosine, colour = evidence(pairs, hashing.split(hash_vectors), vectors, mirror)
    sim = similarity(distance, cosine, colour)
    heads = ids[pairs[:, 0]]
    return [(int(heads[k]), int(ids[j]), bool(i == j), int(distance[k]), _real(cosine[k]),
             _real(sim[k])) for k, (i, j) in enumerate(pairs)]


def working_mb(images, with_features, neighbours):
    """The memory bound of grouping ``images`` (MB, rounded up)."""
    candidates = 2 * (neighbours + 1) if with_features else 0
    per_image = BYTES_PER_IMAGE + candidates * BYTES_PER_CANDIDATE
    return (FIXED_MB if with_features else 0) + -(-images * per_image // (1 << 20))


def _real(value):
    return None if np.isnan(value) else float(value)


def duplicates_of(plpy, GD, image, source, model=DEFAULT_MODEL,
                  max_hash_distance=MAX_HASH_DISTANCE, min_similarity=MIN_SIMILARITY):
    """Rows (image_id, hash_distance, cosine, similarity): the stored near-duplicates of new
    image bytes, most similar first (what ``pgvision load --skip-near-duplicates`` asks)."""
    fn = FN_OF
    require_not_null(fn, "image", image)
    require_not_null(fn, "source", source)
    _check(fn, max_hash_distance, min_similarity)
    with spi.pinned_search_path(plpy):
        query_hash = np.asarray(extract.features_of(
            plpy, GD, fn, image, registry.lookup(plpy, GD, fn, hashing.MODEL)), np.float32)
        source, ids, hash_vectors, vectors, mirror = _inputs(plpy, GD, fn, source, model)
        query_vector = None if vectors is None else np.asarray(extract.features_of(
            plpy, GD, fn, image, registry.lookup(plpy, GD, fn, model)), np.float32)
    distance, cosine, colour = evidence_of(query_hash, hash_vectors, query_vector, vectors,
                                           mirror)
    sim = similarity(distance, cosine, colour)
    keep = np.flatnonzero(is_duplicate(distance, sim, max_hash_distance, min_similarity))
    keep = keep[np.lexsort((ids[keep], distance[keep], -np.nan_to_num(sim[keep], nan=-1)))]
    return [(int(ids[k]), int(distance[k]), _real(cosine[k]), _real(sim[k])) for k in keep]
